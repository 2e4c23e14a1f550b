"""The hub actor: numbers every event and fans it out to the clients subscribed to its type.

Reads: one inbox (`trio.MemoryReceiveChannel[HubMessage]`) that the poller, the heartbeat, the
publish API and every client session write to (each with its own clone of the send end).
Writes: each client's `Outbox`, only ever with `send_nowait`: the hub never awaits a client.
Exits: when cancelled, or when every send end of the inbox is closed. On exit it closes every
client's outbox with 1012 (service restart): a restarted hub starts a new epoch, so its
clients reconnect and resume with `recovered: false`.

The inbox's receive end belongs to whoever built the tree, not to the hub, so messages that
arrive while the hub is being restarted wait in its buffer instead of being discarded.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from sigma.actors.hub_state import Client, HubState
from sigma.config import HubConfig
from sigma.protocol import Event, ListSubscriptions, Subscribe, Unsubscribe, make_event

log = structlog.get_logger("sigma.hub")

SERVICE_RESTART_CODE = 1012
UNDELIVERABLE = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
"""What `send_nowait` raises when a best-effort message cannot be delivered."""


@dataclass(frozen=True)
class Publish:
    """Broadcast these events in order; the seqs they got are sent to `reply` when given."""

    events: tuple[Event, ...]
    reply: trio.MemorySendChannel[tuple[int, ...]] | None = None


@dataclass(frozen=True)
class PublishHeartbeat:
    """Broadcast a heartbeat; the hub adds what only it knows (client count, last seq)."""

    data: dict[str, Any]


@dataclass(frozen=True)
class Join:
    """A client session is ready: welcome it, replay from `since` if asked, then go live."""

    client: Client
    since: int | None = None
    epoch: str | None = None


@dataclass(frozen=True)
class Leave:
    """A client session ended."""

    client_id: str


@dataclass(frozen=True)
class Command:
    """A client asked to change or list its subscriptions."""

    client_id: str
    message: Subscribe | Unsubscribe | ListSubscriptions


HubMessage = Publish | PublishHeartbeat | Join | Leave | Command


class HubActor:
    """The thin loop around `HubState`; one instance per incarnation of the hub."""

    def __init__(self, config: HubConfig, *, heartbeat_interval_s: float) -> None:
        self.state = HubState(
            history_size=config.history_size,
            max_subscriptions=config.max_subscriptions,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        self._debug = log.is_enabled_for(logging.DEBUG)

    def handle(self, message: HubMessage) -> None:
        """Act on one inbox message."""
        match message:
            case Publish(events, reply):
                seqs = tuple(self._broadcast(event) for event in events)
                if reply is not None:
                    with contextlib.suppress(*UNDELIVERABLE):
                        reply.send_nowait(seqs)
            case PublishHeartbeat(data):
                data = {
                    **data,
                    "client_count": len(self.state.clients),
                    "last_seq": self.state.last_seq,
                }
                self._broadcast(make_event("heartbeat", data))
            case Join(client, since, epoch):
                result = self.state.join(client, since=since, epoch=epoch)
                log.debug(
                    "Client joined",
                    client_id=client.client_id,
                    recovered=result.recovered,
                    replayed=result.replayed,
                    total_clients=len(self.state.clients),
                )
            case Leave(client_id):
                self.state.remove(client_id)
            case Command(client_id, command):
                self.state.command(client_id, command)

    def _broadcast(self, event: Event) -> int:
        outcome = self.state.broadcast(event)
        if self._debug:
            log.debug(
                f"Broadcasting {event.type.replace('_', ' ')} event",
                msg_type=event.type,
                seq=outcome.seq,
                sent_to=outcome.sent_to,
                skipped=outcome.skipped,
                total_clients=len(self.state.clients),
            )
        if outcome.cut_off:
            log.info("Slow clients cut off", msg_type=event.type, count=outcome.cut_off)
        return outcome.seq


async def run_hub(
    inbox: trio.MemoryReceiveChannel[HubMessage],
    config: HubConfig,
    *,
    heartbeat_interval_s: float,
    task_status: trio.TaskStatus[HubActor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one incarnation of the hub until cancelled or the inbox ends.

    Resource handling: does not close `inbox` (its owner does). Error handling: a crash
    propagates to the supervisor; either way every client is closed with 1012 on the way out.
    """
    actor = HubActor(config, heartbeat_interval_s=heartbeat_interval_s)
    log.info("Hub started", epoch=actor.state.epoch)
    task_status.started(actor)
    try:
        async for message in inbox:
            actor.handle(message)
    finally:
        actor.state.close_all(SERVICE_RESTART_CODE, "hub restarted")
