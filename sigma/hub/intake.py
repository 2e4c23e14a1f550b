"""The hub's way in for events: a gate producers wait on, so that overload pushes back on them.

The hub has one inbox (a bounded trio memory channel) for everything: events, and the joins,
leaves and subscription commands of the sessions. Sessions write to it directly. Event producers
(the publish API, the poller, the heartbeat) come through `HubIntake`, which lets an event in
only while

- the inbox has room for events: fewer than half its slots in use (`room`), the other half
  being kept for joins, leaves and commands, so that "stop taking events" never stops those; and
- the herd of clients does not lag (`sigma.hub.overload`; not checked under `drop_oldest`,
  where a lagging client loses its oldest events by choice).

So "stop taking new events" is this gate closing; nothing already accepted is dropped. The
publish API waits a bounded time for the gate (`publish`, which raises `Overloaded` when it
stays closed); internal producers wait as long as it takes (`send`). While the gate is closed
because the herd lags, waiting producers look at the clients' queues again, every
`overload.RECHECK_S` at first and at least every `MAX_RECHECK_S` (senders drain them without
telling the hub).

A publish that finds the hub idle (waiting on an empty inbox, no fault armed) is handled at once
on the publisher's own task: the hub's state is synchronous and trio switches tasks only at
`await`, so this is exactly what the hub would do next, without the two task switches of the
hop there and back. A bug raised there is handed to the hub, which crashes with it as if it
had raised it itself.
"""

from __future__ import annotations

import contextlib
import math
from typing import Protocol

import trio

from sigma.hub.messages import HubMessage, Publish
from sigma.hub.overload import RECHECK_S
from sigma.protocol.server_messages import Event

MAX_RECHECK_S = 0.05
"""The longest a waiting producer goes between two looks at the gate."""


class Overloaded(Exception):
    """No room for new events came within the wait: nothing was accepted.

    `reason` is `herd_lagging` (most clients' queues are deep) or `inbox_full`.
    """

    def __init__(self, reason: str, waited_s: float) -> None:
        super().__init__(f"{reason} after {waited_s:.3f} s")
        self.reason = reason
        self.waited_s = waited_s


class IntakeHub(Protocol):
    """What the intake asks of the running hub (`sigma.hub.actor.HubActor` is one)."""

    def accepts_events(self, now: float | None = None) -> bool:
        """False while the herd lags (after looking at the depths again when that is due).
        `now`: the trio time, read by the hub when it needs it if not given."""
        ...

    def can_handle_now(self) -> bool:
        """True when a message may be handled on the caller's task (no fault point armed, the
        hub numbers events itself)."""
        ...

    def publish_now(self, events: tuple[Event, ...], key: str | None) -> tuple[int, ...]:
        """Broadcast `events` at once, on the caller's task; return their seqs (those of the
        first publish with idempotency `key`, when there was one)."""
        ...

    def crash_with(self, error: Exception) -> None:
        """Make the hub raise `error` from its own loop the next time it runs."""
        ...


class HubIntake:
    """The gate in front of the hub's inbox for every event producer; see the module docstring."""

    def __init__(self, inbox: trio.MemorySendChannel[HubMessage], *, room: int | None = None):
        """`room`: how many inbox slots events may fill (half the inbox's buffer by default)."""
        self.inbox = inbox
        size = inbox.statistics().max_buffer_size
        if room is None:
            room = max(1, int(size) // 2) if math.isfinite(size) else 1 << 30
        self.room = room
        self.refused: dict[str, int] = {"herd_lagging": 0, "inbox_full": 0}
        """Publishes answered `Overloaded`, by reason."""
        self.waits = 0
        """Producers that found the gate closed and waited."""
        self._hub: IntakeHub | None = None

    # --- the hub's side -------------------------------------------------------------------

    def attach(self, hub: IntakeHub) -> None:
        """A hub incarnation started: it decides about the herd from now on."""
        self._hub = hub

    def detach(self, hub: IntakeHub) -> None:
        """A hub incarnation is ending: events wait in the inbox for the next one."""
        if self._hub is hub:
            self._hub = None

    # --- the producers' side --------------------------------------------------------------

    def closed_because(self) -> str | None:
        """Why no event may come in now (`inbox_full`, `herd_lagging`), or None when one may."""
        if self.inbox.statistics().current_buffer_used >= self.room:
            return "inbox_full"
        hub = self._hub
        if hub is not None and not hub.accepts_events(trio.current_time()):
            return "herd_lagging"
        return None

    async def wait_open(self) -> None:
        """Wait until an event may come in; returns at once when it may."""
        if self.closed_because() is None:
            return
        self.waits += 1
        # Polled (senders drain the clients' queues without telling anyone), first every
        # RECHECK_S, then less often the longer it stays closed.
        pause_s = RECHECK_S
        while True:
            await trio.sleep(pause_s)
            if self.closed_because() is None:
                return
            pause_s = min(2 * pause_s, MAX_RECHECK_S)

    async def send(self, message: HubMessage) -> None:
        """For internal producers: wait (unbounded) until the gate opens, then queue `message`."""
        await self.wait_open()
        await self.inbox.send(message)

    async def publish(
        self,
        events: tuple[Event, ...],
        *,
        key: str | None = None,
        wait_s: float,
        reply_timeout_s: float,
    ) -> tuple[int, ...] | None:
        """Have `events` numbered and broadcast; return their seqs.

        `key` is the publish's idempotency key (`Publish.key`). Waits at most `wait_s` for the
        gate, then raises `Overloaded` (nothing accepted). Once accepted, waits at most
        `reply_timeout_s` for the seqs; None when they did not come (a cluster's broker did
        not number the events in time, or refused them by closing the reply).
        """
        hub = self._hub
        if hub is not None and self._can_go_direct(hub) and hub.accepts_events():
            return self._publish_now(hub, events, key)
        started = trio.current_time()
        with trio.move_on_after(wait_s):
            await self.wait_open()
        reason = self.closed_because()
        if reason is not None:
            self.refused[reason] += 1
            raise Overloaded(reason, trio.current_time() - started)
        hub = self._hub
        if hub is not None and self._can_go_direct(hub):
            return self._publish_now(hub, events, key)
        reply_send, reply_receive = trio.open_memory_channel[tuple[int, ...]](1)
        # Closing `reply_receive` on the way out withdraws the publish if it was not numbered yet
        # (`Publish.withdrawn`): a None returned here is never followed by a broadcast.
        with reply_receive:
            self.inbox.send_nowait(Publish(events, reply_send, key))  # room was checked
            with trio.move_on_after(reply_timeout_s), contextlib.suppress(trio.EndOfChannel):
                return await reply_receive.receive()
        return None

    def _can_go_direct(self, hub: IntakeHub) -> bool:
        """The hub waits on an empty inbox and no fault point is armed."""
        stats = self.inbox.statistics()
        return (
            stats.current_buffer_used == 0
            and stats.tasks_waiting_receive > 0
            and hub.can_handle_now()
        )

    def _publish_now(
        self, hub: IntakeHub, events: tuple[Event, ...], key: str | None
    ) -> tuple[int, ...]:
        try:
            return hub.publish_now(events, key)
        except Exception as error:
            hub.crash_with(error)
            self.inbox.send_nowait(Publish(()))  # wakes the hub, which then raises `error`
            raise
