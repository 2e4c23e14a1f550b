"""The event types: every `type` an `Event` may carry, the core set a new client is
subscribed to, and the opt-in types it gets only once it subscribes to them."""

from __future__ import annotations

from typing import Literal, get_args

EventType = Literal[
    "agent_status",
    "compression_update",
    "connection_error",
    "heartbeat",
    "notification",
    "rpc_error",
    "storage_update",
    "supervision",
    "system_status",
]
ALL_EVENT_TYPES: tuple[str, ...] = get_args(EventType)
"""Every event type, sorted: the eight core types and the opt-in `supervision`."""
OPT_IN_EVENT_TYPES: frozenset[str] = frozenset({"supervision"})
"""Types a client receives only once it subscribes to them (never by default)."""
EVENT_TYPES: tuple[str, ...] = tuple(t for t in ALL_EVENT_TYPES if t not in OPT_IN_EVENT_TYPES)
"""The eight core event types, sorted: what a new client is subscribed to."""
CORE_EVENT_TYPES: frozenset[str] = frozenset(EVENT_TYPES)
KNOWN_EVENT_TYPES: frozenset[str] = frozenset(ALL_EVENT_TYPES)
