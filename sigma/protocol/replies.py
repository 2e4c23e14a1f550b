"""The direct replies to one client, all `Reply`s with `seq: null`: the welcome (`welcome()` of
a `WelcomeFields`, whose JSON `encode_welcome()` writes cheaply), `pong()`,
`subscriptions_reply()`, `error_reply()`, `token_refreshed()` and `missed_events_notice()`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from sigma import __version__
from sigma.protocol.base import RequestId
from sigma.protocol.codes import ErrorCode
from sigma.protocol.event_types import CORE_EVENT_TYPES
from sigma.protocol.server_messages import Reply, encode
from sigma.protocol.timestamps import utc_now_iso


class WelcomeFields(NamedTuple):
    """What the welcome tells one client: `welcome()` and `encode_welcome()` both take it."""

    client_id: str
    subscriptions: frozenset[str]
    last_seq: int
    epoch: str
    heartbeat_interval_s: float
    recovered: bool | None
    node: str = ""
    """The server's node (a cluster names each); left out of the welcome when empty."""
    last_heartbeat_at: str | None = None
    """The timestamp of the node's newest heartbeat; left out before the first."""
    client_count: int | None = None
    """The node's connected clients, this one included; left out when not given."""


def welcome(fields: WelcomeFields) -> Reply:
    """The first frame a client receives after the handshake."""
    return Reply(type="notification", data=_welcome_data(fields))


def encode_welcome(fields: WelcomeFields, *, timestamp: str | None = None) -> bytes:
    """The JSON text of `welcome(fields)`, byte for byte what `encode` gives for it, but cheap.

    Every accepted connection gets one, so it is written by orjson straight from the fields
    (as `encode_event` does), without building and validating a `Reply`; what orjson cannot
    write goes through pydantic instead. `timestamp` defaults to now.
    """
    data = _welcome_data(fields)
    envelope = {
        "type": "notification",
        "timestamp": utc_now_iso() if timestamp is None else timestamp,
        "seq": None,
        "data": data,
    }
    try:
        return orjson.dumps(envelope)
    except TypeError:
        reply = Reply(type="notification", timestamp=envelope["timestamp"], data=data)
        return encode(reply)


def _welcome_data(fields: WelcomeFields) -> dict[str, Any]:
    subscriptions = fields.subscriptions
    data: dict[str, Any] = {
        "kind": "welcome",
        "client_id": fields.client_id,
        "subscriptions": _sorted_subscriptions(subscriptions),
        "message": _WELCOME_CORE if subscriptions == CORE_EVENT_TYPES else _WELCOME_OTHER,
        "last_seq": fields.last_seq,
        "epoch": fields.epoch,
        "heartbeat_interval": fields.heartbeat_interval_s,
        "server_version": __version__,
    }
    if fields.recovered is not None:
        data["recovered"] = fields.recovered
    if fields.node:
        data["node"] = fields.node
    if fields.last_heartbeat_at is not None:
        data["last_heartbeat_at"] = fields.last_heartbeat_at
    if fields.client_count is not None:
        data["client_count"] = fields.client_count
    return data


_WELCOME_CORE = "Connected to Sigma WebSocket. You are subscribed to all core events."
_WELCOME_OTHER = "Connected to Sigma WebSocket."
_SORTED_CORE = sorted(CORE_EVENT_TYPES)


def _sorted_subscriptions(subscriptions: frozenset[str]) -> list[str]:
    # Most clients subscribe to the core set: its sorted list is copied, not sorted again.
    if subscriptions == CORE_EVENT_TYPES:
        return list(_SORTED_CORE)
    return sorted(subscriptions)


def pong(request_id: RequestId) -> Reply:
    """The answer to `{"action": "ping"}`."""
    return Reply(type="pong", data={"request_id": request_id})


def subscriptions_reply(
    subscriptions: frozenset[str], request_id: RequestId, last_seq: int | None = None
) -> Reply:
    """The answer to subscribe, unsubscribe and list_subscriptions: the set after the change.

    `last_seq`, when given, is the newest seq broadcast when the change took effect: every event
    up to it of a type the client had is already before this reply in its stream.
    """
    data: dict[str, Any] = {"subscriptions": sorted(subscriptions), "request_id": request_id}
    if last_seq is not None:
        data["last_seq"] = last_seq
    return Reply(type="subscriptions", data=data)


def error_reply(code: ErrorCode, message: str, request_id: RequestId = None) -> Reply:
    """An `error` frame; the connection stays open."""
    return Reply(
        type="error",
        data={"code": code.value, "message": message, "request_id": request_id},
    )


def token_refreshed(expires_at: datetime, request_id: RequestId) -> Reply:
    """The answer to a good `refresh`: the session now lasts until `expires_at`."""
    return Reply(
        type="notification",
        data={
            "kind": "token_refreshed",
            "expires_at": expires_at.astimezone(UTC).isoformat(),
            "request_id": request_id,
        },
    )


def missed_events_notice(count: int) -> Reply:
    """Told to a client under `drop_oldest` when its queue overflowed."""
    return Reply(
        type="notification",
        data={
            "kind": "events_dropped",
            "dropped": count,
            "message": f"{count} event(s) were dropped because this client fell behind.",
        },
    )
