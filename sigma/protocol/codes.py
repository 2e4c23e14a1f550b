"""The codes the contract fixes: `CloseCode`, every WebSocket close code, and `ErrorCode`,
the `code` of an `error` reply (docs/protocol.md lists both)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


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
