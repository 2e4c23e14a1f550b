"""The hub's inbox contract: the messages producers (poller, heartbeat, publish API, sessions)
send it. Producers import this module, never the hub's actor or state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from sigma.hub.outbox import Outbox
from sigma.protocol import (
    CORE_EVENT_TYPES,
    KNOWN_EVENT_TYPES,
    Event,
    ListSubscriptions,
    Subscribe,
    Unsubscribe,
)

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
