"""Every message on the wire, as frozen pydantic models, with one decoder and one encoder.

Server -> client: `Event` (broadcast, carries `seq`) and the direct replies built by
`welcome()` (whose JSON `encode_welcome()` writes cheaply), `pong()`, `subscriptions_reply()` and
`error_reply()` (all with `seq: null`).
Client -> server: `ClientMessage`, a union discriminated by `action`, decoded by
`decode_client_frame()`, which raises `ProtocolViolation` with the contract's error code.

Events are encoded to JSON once (`encode()`), never once per client.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sigma import __version__
from sigma.errors import dotted_location, first_error

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
RequestId = str | int | None


class CloseCode(IntEnum):
    """Every WebSocket close code Sigma sends, records or acts on (RFC 6455 7.4, and its 4xxx).

    1005 and 1006 never go on the wire: 1005 stands for a close frame without a code, 1006 for a
    peer that left without a close frame. 1010 is only ever sent by clients. Codes below 3000
    are the RFC's; 4000-4999 are private to this protocol.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


def utc_now_iso() -> str:
    """The current time as ISO 8601 with a UTC offset, the only timestamp form on the wire."""
    return utc_iso_of_micros(time.time_ns() // 1000)


_UTC_OFFSET = "+00:00"
_second_prefix: tuple[int, str] = (-1, "")
"""The last whole second `utc_iso_of_micros` formatted, and its text without the offset."""


def utc_iso_of_micros(micros: int) -> str:
    """The instant `micros` microseconds after the Unix epoch, as `datetime.isoformat()` writes
    it in UTC (the fraction left out when it is zero), byte for byte.

    Every event is stamped, so this is on the publish path: the date and time of day are
    formatted by `datetime` once per second and kept, and only the microseconds are added per
    call (about 2.5x cheaper than `datetime.now(UTC).isoformat()`).
    """
    global _second_prefix
    second, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _second_prefix
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).isoformat()[: -len(_UTC_OFFSET)]
        _second_prefix = (second, prefix)  # one assignment: never a torn pair
    if fraction:
        return f"{prefix}.{fraction:06d}{_UTC_OFFSET}"
    return prefix + _UTC_OFFSET


class ErrorCode(StrEnum):
    """The `code` of an `error` reply: a small, documented set."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    INVALID_TOKEN = "invalid_token"


class Frozen(BaseModel):
    """Base of every wire model: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- server -> client -------------------------------------------------------------------------


class Event(Frozen):
    """A broadcast event. Producers leave `seq` unset; the hub numbers it.

    `snapshot` is true on the copies of retained state a client gets when it joins or
    subscribes (`seq` is then the one the event was broadcast with, at most the welcome's
    `last_seq` on join); live events leave it out of the JSON and decode as false.
    """

    type: EventType
    timestamp: str = Field(default_factory=utc_now_iso)
    seq: int | None = None
    data: dict[str, Any]
    snapshot: bool = Field(default=False, exclude=True)


class Reply(Frozen):
    """A direct reply to one client (welcome, pong, subscriptions, error): `seq` is null."""

    type: Literal["notification", "pong", "subscriptions", "error"]
    timestamp: str = Field(default_factory=utc_now_iso)
    seq: None = None
    data: dict[str, Any]


ServerMessage = Event | Reply


def encode(message: ServerMessage) -> bytes:
    """Serialise one server message to the UTF-8 JSON text of one frame."""
    return message.model_dump_json().encode()


def encode_event(event: Event, seq: int) -> bytes:
    """The JSON text of `event` numbered `seq`: what `encode` gives for its numbered copy.

    orjson writes it straight from the fields, without building the copy (the hub does this for
    every event); data orjson cannot serialise goes through pydantic instead.
    """
    envelope = {"type": event.type, "timestamp": event.timestamp, "seq": seq, "data": event.data}
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    except TypeError:
        return encode(event.model_copy(update={"seq": seq}))


def encode_snapshot(event: Event, seq: int) -> bytes:
    """The JSON text of `event` numbered `seq`, replayed as retained state: `"snapshot": true`."""
    envelope = {
        "type": event.type,
        "timestamp": event.timestamp,
        "seq": seq,
        "data": event.data,
        "snapshot": True,
    }
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    except TypeError:
        return orjson.dumps({**orjson.loads(encode_event(event, seq)), "snapshot": True})


def make_event(event_type: EventType, data: dict[str, Any]) -> Event:
    """Build an unnumbered event stamped with the current time."""
    return Event(type=event_type, data=data)


def make_checked_event(event_type: EventType, data: dict[str, Any]) -> Event:
    """`make_event` for input validated already (the publish API's items).

    Every field is given, so that pydantic resolves no default (its default-factory path
    inspects the factory's signature on each call). Validating the four given fields, in
    pydantic-core, costs less than `model_construct`, which walks the fields in Python.
    """
    return Event(type=event_type, timestamp=utc_now_iso(), seq=None, data=data)


def welcome(
    *,
    client_id: str,
    subscriptions: frozenset[str],
    last_seq: int,
    epoch: str,
    heartbeat_interval_s: float,
    recovered: bool | None,
    node: str = "",
    last_heartbeat_at: str | None = None,
) -> Reply:
    """The first frame a client receives after the handshake; `node` names the server's node,
    `last_heartbeat_at` the timestamp of its newest heartbeat (none before the first)."""
    data = _welcome_data(
        client_id,
        subscriptions,
        last_seq,
        epoch,
        heartbeat_interval_s,
        recovered,
        node,
        last_heartbeat_at,
    )
    return Reply(type="notification", data=data)


def encode_welcome(
    *,
    client_id: str,
    subscriptions: frozenset[str],
    last_seq: int,
    epoch: str,
    heartbeat_interval_s: float,
    recovered: bool | None,
    node: str = "",
    last_heartbeat_at: str | None = None,
    timestamp: str | None = None,
) -> bytes:
    """The JSON text of `welcome(...)`, byte for byte what `encode` gives for it, but cheap.

    Every accepted connection gets one, so it is written by orjson straight from the fields
    (as `encode_event` does), without building and validating a `Reply`; what orjson cannot
    write goes through pydantic instead. `timestamp` defaults to now.
    """
    data = _welcome_data(
        client_id,
        subscriptions,
        last_seq,
        epoch,
        heartbeat_interval_s,
        recovered,
        node,
        last_heartbeat_at,
    )
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


def _welcome_data(
    client_id: str,
    subscriptions: frozenset[str],
    last_seq: int,
    epoch: str,
    heartbeat_interval_s: float,
    recovered: bool | None,
    node: str,
    last_heartbeat_at: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "welcome",
        "client_id": client_id,
        "subscriptions": _sorted_subscriptions(subscriptions),
        "message": _WELCOME_CORE if subscriptions == CORE_EVENT_TYPES else _WELCOME_OTHER,
        "last_seq": last_seq,
        "epoch": epoch,
        "heartbeat_interval": heartbeat_interval_s,
        "server_version": __version__,
    }
    if recovered is not None:
        data["recovered"] = recovered
    if node:
        data["node"] = node
    if last_heartbeat_at is not None:
        data["last_heartbeat_at"] = last_heartbeat_at
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


# --- client -> server -------------------------------------------------------------------------


class ClientFrame(Frozen):
    """Fields every client frame may carry: `id` is echoed back as `request_id`."""

    id: RequestId = None


class Subscribe(ClientFrame):
    """Add event types to this client's subscriptions."""

    action: Literal["subscribe"]
    types: list[EventType] = Field(min_length=1)


class Unsubscribe(ClientFrame):
    """Remove event types from this client's subscriptions."""

    action: Literal["unsubscribe"]
    types: list[EventType] = Field(min_length=1)


class ListSubscriptions(ClientFrame):
    """Ask for this client's current subscriptions."""

    action: Literal["list_subscriptions"]


class Ping(ClientFrame):
    """Application-level ping for clients (browsers) that cannot see protocol pings."""

    action: Literal["ping"]


class Refresh(ClientFrame):
    """Present a new token before the current one expires, to keep the session open."""

    action: Literal["refresh"]
    token: str = Field(min_length=1, repr=False)


ClientMessage = Annotated[
    Subscribe | Unsubscribe | ListSubscriptions | Ping | Refresh, Field(discriminator="action")
]
ACTIONS: tuple[str, ...] = ("list_subscriptions", "ping", "refresh", "subscribe", "unsubscribe")
_client_message_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class ProtocolViolation(Exception):
    """A client frame that cannot be acted on; becomes an `error` reply, never a close."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def reply(self) -> Reply:
        """The `error` frame that tells the client what was wrong."""
        return error_reply(self.code, self.message, self.request_id)


def decode_client_frame(frame: str | bytes) -> ClientMessage:
    """Decode one client frame, or raise `ProtocolViolation` with the contract's error code."""
    if isinstance(frame, bytes):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "binary frames are not accepted")
    try:
        raw = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "frame must be a JSON object")
    request_id = raw.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = None
    action = raw.get("action")
    if not isinstance(action, str):
        raise ProtocolViolation(
            ErrorCode.INVALID_MESSAGE, "frame needs a string field 'action'", request_id
        )
    if action not in ACTIONS:
        raise ProtocolViolation(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {action[:64]!r}; expected one of {', '.join(ACTIONS)}",
            request_id,
        )
    try:
        return _client_message_adapter.validate_python(raw)
    except ValidationError as exc:
        raise _violation_from(exc, request_id) from None


def _violation_from(exc: ValidationError, request_id: RequestId) -> ProtocolViolation:
    first = first_error(exc)
    location = dotted_location(first, skip=1)  # the first part names the action's model
    if first["type"] == "literal_error" and location.startswith("types."):
        unknown = str(first["input"])[:64]
        return ProtocolViolation(
            ErrorCode.UNKNOWN_EVENT_TYPE,
            f"unknown event type {unknown!r}; expected one of {', '.join(ALL_EVENT_TYPES)}",
            request_id,
        )
    return ProtocolViolation(
        ErrorCode.INVALID_MESSAGE, f"{location or 'frame'}: {first['msg']}", request_id
    )
