"""The client's frames: `ClientMessage`, a union discriminated by `action`, decoded by
`decode_client_frame()`, which raises `ProtocolViolation` with the contract's error code."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from sigma.errors import dotted_location, first_error
from sigma.protocol.base import Frozen, RequestId
from sigma.protocol.codes import ErrorCode
from sigma.protocol.event_types import ALL_EVENT_TYPES, EventType
from sigma.protocol.replies import error_reply
from sigma.protocol.server_messages import Reply


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
