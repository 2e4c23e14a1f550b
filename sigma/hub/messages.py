"""The hub's inbox contract: the messages producers (poller, heartbeat, publish API, sessions)
send it. Producers import this module, never the hub's actor or state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from sigma.hub.outbox import Outbox
from sigma.protocol.client_frames import ListSubscriptions, Subscribe, Unsubscribe
from sigma.protocol.event_types import CORE_EVENT_TYPES, KNOWN_EVENT_TYPES
from sigma.protocol.server_messages import Event

UNDELIVERABLE = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
"""What `send_nowait` raises when a best-effort message cannot be delivered."""


@dataclass(slots=True)
class Client:
    """What the hub knows of one connected client."""

    client_id: str
    outbox: Outbox
    allowed: frozenset[str] = KNOWN_EVENT_TYPES
    subscriptions: frozenset[str] = field(default=CORE_EVENT_TYPES)


@dataclass(frozen=True)
class Publish:
    """Broadcast these events in order; the seqs they got are sent to `reply` when given.

    A `reply` closed without an answer means the events were refused (the cluster's broker
    could not take them in time): nothing was published. `idempotency_key`: a second publish
    with the same key answers the first one's seqs and broadcasts nothing. `fence`: the poller
    lease's token; the cluster's broker drops the events once that lease is no longer held.
    """

    events: tuple[Event, ...]
    reply: trio.MemorySendChannel[tuple[int, ...]] | None = None
    idempotency_key: str | None = None
    fence: str | None = None

    def withdrawn(self) -> bool:
        """Whether the publisher gave up waiting (it closed its end of `reply`).

        It was then told "not published", so the events must not be: the hub and the broker
        check this before numbering anything. Between awaits nothing can change it, so the
        check and the numbering that follows it cannot race the publisher.
        """
        return self.reply is not None and self.reply.statistics().open_receive_channels == 0


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


@dataclass(frozen=True)
class Deliver:
    """Events numbered elsewhere (by the cluster's broker), in order, as `(seq, event)` pairs.

    `after` is the seq the first event follows. When `epoch` is not the hub's, or `after` lies
    beyond the hub's last seq (this node missed events), the hub restarts its numbering there:
    its clients are closed with 1012, and come back to resume what they can.
    """

    epoch: str
    after: int
    events: tuple[tuple[int, Event], ...]


@dataclass(frozen=True)
class Notice:
    """An event for this node's clients only, unnumbered (`seq: null`) and never replayed."""

    event: Event


HubMessage = Publish | PublishHeartbeat | Join | Leave | Command | Deliver | Notice


class EventSink(Protocol):
    """Where an internal producer (poller, heartbeat) sends its events: the hub's intake
    (`sigma.hub.intake.HubIntake`), which waits for room; a bare inbox channel also fits."""

    async def send(self, message: HubMessage, /) -> None:
        """Queue `message` for the hub, waiting as long as it takes for room."""
        ...
