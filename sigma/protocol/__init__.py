"""Every message on the wire, as frozen pydantic models, with one decoder and one encoder.

Server -> client: `Event` (broadcast, carries `seq`) and the direct replies built by
`welcome()` (whose JSON `encode_welcome()` writes cheaply), `pong()`, `subscriptions_reply()` and
`error_reply()` (all with `seq: null`).
Client -> server: `ClientMessage`, a union discriminated by `action`, decoded by
`decode_client_frame()`, which raises `ProtocolViolation` with the contract's error code.

An event is encoded to JSON once (`encode_event()`), never once per client.

Every public name is importable from here; inside Sigma, import it from its module. Read in
this order:
- `event_types`: `EventType`, the core types a new client gets and the opt-in ones;
- `codes`: `CloseCode` (WebSocket close codes) and `ErrorCode` (the `code` of an `error` reply);
- `timestamps`: `utc_now_iso()`, the one timestamp form on the wire (on the publish path);
- `base`: `Frozen`, the base of every wire model, and `RequestId`, the `id` of a client frame;
- `server_messages`: `Event` and `Reply`, `make_event()`, and their JSON (`encode_event()`);
- `replies`: the direct replies to one client: `welcome()` and `encode_welcome()`, `pong()`,
  `subscriptions_reply()`, `error_reply()`, `token_refreshed()`, `missed_events_notice()`;
- `client_frames`: `Subscribe` ... `Refresh`, `ProtocolViolation`, `decode_client_frame()`.
"""

from sigma.protocol.base import Frozen, RequestId
from sigma.protocol.client_frames import (
    ACTIONS,
    ClientFrame,
    ClientMessage,
    ListSubscriptions,
    Ping,
    ProtocolViolation,
    Refresh,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)
from sigma.protocol.codes import CloseCode, ErrorCode
from sigma.protocol.event_types import (
    ALL_EVENT_TYPES,
    CORE_EVENT_TYPES,
    EVENT_TYPES,
    KNOWN_EVENT_TYPES,
    OPT_IN_EVENT_TYPES,
    EventType,
)
from sigma.protocol.replies import (
    WelcomeFields,
    encode_welcome,
    error_reply,
    missed_events_notice,
    pong,
    subscriptions_reply,
    token_refreshed,
    welcome,
)
from sigma.protocol.server_messages import (
    Event,
    Reply,
    ServerMessage,
    encode,
    encode_event,
    encode_snapshot,
    make_checked_event,
    make_event,
)
from sigma.protocol.timestamps import utc_iso_of_micros, utc_now_iso

__all__ = [
    "ACTIONS",
    "ALL_EVENT_TYPES",
    "CORE_EVENT_TYPES",
    "EVENT_TYPES",
    "KNOWN_EVENT_TYPES",
    "OPT_IN_EVENT_TYPES",
    "ClientFrame",
    "ClientMessage",
    "CloseCode",
    "ErrorCode",
    "Event",
    "EventType",
    "Frozen",
    "ListSubscriptions",
    "Ping",
    "ProtocolViolation",
    "Refresh",
    "Reply",
    "RequestId",
    "ServerMessage",
    "Subscribe",
    "Unsubscribe",
    "WelcomeFields",
    "decode_client_frame",
    "encode",
    "encode_event",
    "encode_snapshot",
    "encode_welcome",
    "error_reply",
    "make_checked_event",
    "make_event",
    "missed_events_notice",
    "pong",
    "subscriptions_reply",
    "token_refreshed",
    "utc_iso_of_micros",
    "utc_now_iso",
    "welcome",
]
