"""The client side of the wire: connect to a gateway's `/ws`, read its welcome, decode its frames.

`sigma check` (the monitoring probe) and `sigma watch` (the live view) both go through here. It is
the one place where trio-websocket's exceptions become the project's, split by what they mean:

- `GatewayUnavailable`: no usable connection: refused, unresolvable, no handshake or no welcome
  in time, or a close before the welcome.
- `GatewayRefused` (a `GatewayUnavailable`): the gateway answered the upgrade with an HTTP error;
  `status` is its status, `error` and `detail` come from its JSON body.
- `GatewayProtocolError`: the gateway answered but broke the wire contract (a frame that is not a
  JSON object with `type`, `timestamp`, `seq` and `data`, a malformed welcome, a timestamp with no
  UTC offset).

`trio_websocket.ConnectionClosed` after the welcome is left as it is: for a client, a close is an
ordinary event whose reason (`describe_close`) says who closed and why.

`wss://` URLs are verified against the system's trusted CAs, or against one private CA's
certificate (`sigma.client.tls.tls_context`, from the tools' `--cafile`).
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import trio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from sigma.errors import RemoteError, dotted_location, first_error
from sigma.protocol.server_messages import Event, Reply, ServerMessage

DEFAULT_URL = "ws://127.0.0.1:12080/ws"
CLOSE_TIMEOUT_S = 1.0
"""How long a client waits for the closing handshake before dropping the connection."""
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Largest server frame a client accepts (events such as storage_update can be large)."""
REQUIRED_FIELDS = ("type", "timestamp", "seq", "data")
TLS_DIAGNOSIS_S = 2.0
"""How long a client spends finding out why a `wss://` handshake timed out (`_tls_problem`)."""


class GatewayUnavailable(RemoteError):
    """No usable connection to the gateway.

    `status` is the HTTP status of a rejected upgrade; `close_code` the close code when the
    gateway closed the connection before its welcome (1006 when without a close frame).
    """

    def __init__(
        self, message: str, *, status: int | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.close_code = close_code


class GatewayRefused(GatewayUnavailable):
    """The gateway refused the upgrade with an HTTP error (401 bad token, 403 origin, 503 full).

    `status` is the HTTP status; `error` and `detail` are the fields of the gateway's JSON body
    (`invalid_token`, `too_many_connections`, ...), empty when it had none.
    """

    def __init__(self, message: str, *, status: int, error: str = "", detail: str = "") -> None:
        super().__init__(message, status=status)
        self.status: int = status
        self.error = error
        self.detail = detail


class GatewayProtocolError(RemoteError):
    """The gateway answered, but what it sent breaks the wire contract."""


class Welcome(BaseModel):
    """The `data` of the welcome frame, as far as a client relies on it; other keys are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    kind: Literal["welcome"]
    client_id: str = Field(min_length=1)
    subscriptions: list[str]
    last_seq: int = Field(ge=0)
    epoch: str = Field(min_length=1)
    heartbeat_interval: float = Field(gt=0)
    server_version: str
    recovered: bool | None = None
    node: str = ""
    """The node the client is connected to (a cluster names each; empty when not said)."""
    client_count: int | None = Field(default=None, ge=1)
    """The node's connected clients, this one included (None from a server that does not say)."""


def check_ws_url(url: str) -> str:
    """Return `url` if a client can connect to it (ws:// or wss:// with a host), else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


def resume_url(url: str, since: int, epoch: str) -> str:
    """`url` with `since` and `epoch` set in its query (other parameters are kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("since", "epoch")]
    query += [("since", str(since)), ("epoch", epoch)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with its UTC offset, else `GatewayProtocolError`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GatewayProtocolError(f"timestamp {text[:64]!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise GatewayProtocolError(f"timestamp {text[:64]!r} has no UTC offset")
    return moment


def decode_server_frame(frame: str | bytes) -> ServerMessage:
    """Decode one server frame: an `Event` when it has a `seq`, a `Reply` when `seq` is null."""
    if isinstance(frame, bytes):
        raise GatewayProtocolError("binary frame; the gateway sends text frames only")
    try:
        raw = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise GatewayProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise GatewayProtocolError("frame is not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in raw]
    if missing:
        raise GatewayProtocolError(f"frame has no {', '.join(missing)}")
    model: type[Event] | type[Reply] = Reply if raw["seq"] is None else Event
    try:
        message = model.model_validate(raw)
    except ValidationError as exc:
        raise GatewayProtocolError(
            f"{str(raw['type'])[:32]!r} frame: {_first_error(exc)}"
        ) from None
    parse_timestamp(message.timestamp)
    return message


def read_welcome(message: ServerMessage) -> Welcome:
    """The welcome in `message`, or `GatewayProtocolError` saying what is wrong with it."""
    kind = message.data.get("kind")
    if not (isinstance(message, Reply) and message.type == "notification" and kind == "welcome"):
        raise GatewayProtocolError(
            f"first frame is not a welcome (type {message.type!r}, kind {kind!r})"
        )
    try:
        return Welcome.model_validate(message.data)
    except ValidationError as exc:
        raise GatewayProtocolError(f"malformed welcome: {_first_error(exc)}") from None


async def receive_welcome(ws: WebSocketConnection, timeout_s: float) -> Welcome:
    """Wait at most `timeout_s` for the first frame and return it as a `Welcome`.

    Error handling: no frame in time, or a close first, is `GatewayUnavailable`; anything but a
    well-formed welcome is `GatewayProtocolError`.
    """
    with trio.move_on_after(timeout_s):
        try:
            frame = await ws.get_message()
        except ConnectionClosed as exc:
            code = int(exc.reason.code) if exc.reason is not None else 1006
            raise GatewayUnavailable(
                f"closed before the welcome: {describe_close(exc)}", close_code=code
            ) from exc
        return read_welcome(decode_server_frame(frame))
    raise GatewayUnavailable(f"no welcome within {timeout_s:g}s")


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    timeout_s: float,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Open one WebSocket connection to `url`, completing the handshake within `timeout_s`.

    `token` is sent as `Authorization: Bearer <token>`; `ssl_context` (`tls.tls_context`) verifies a
    `wss://` server (None: the system's trusted CAs). This is one connection, no more:
    `sigma.client.connect` is the stream that reconnects and resumes.
    Resource handling: closes the connection on exit; a closing handshake that takes longer than
    `CLOSE_TIMEOUT_S` is abandoned silently (the connection is dropped either way).
    Error handling: a failed connect or handshake raises `GatewayUnavailable`; exceptions from
    the body pass through unchanged.
    """
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    # The handshake deadline is our own cancel scope, lifted once connected: trio-websocket's
    # `connect_timeout` raises on time, but then waits for ever for its reader task when the
    # server accepted TCP and never answers the upgrade.
    handshake = trio.CancelScope(deadline=trio.current_time() + timeout_s)
    try:
        with handshake:
            async with open_websocket_url(
                url,
                ssl_context=ssl_context,
                extra_headers=headers,
                max_message_size=MAX_FRAME_BYTES,
                connect_timeout=math.inf,
                disconnect_timeout=CLOSE_TIMEOUT_S,
            ) as ws:
                handshake.deadline = math.inf
                yield ws
    except ConnectionRejected as exc:
        error, detail = _rejection_body(exc.body)
        shown = f": {(detail or error)[:120]}" if detail or error else ""
        raise GatewayRefused(
            f"upgrade rejected with HTTP {exc.status_code}{shown}",
            status=exc.status_code,
            error=error,
            detail=detail,
        ) from exc
    except DisconnectionTimeout:
        pass
    except HandshakeError as exc:
        raise GatewayUnavailable(f"cannot connect: {_os_reason(exc.__cause__)}") from exc
    if handshake.cancelled_caught:
        problem = await _tls_problem(url, ssl_context) if url.startswith("wss:") else None
        if problem is not None:
            raise GatewayUnavailable(f"cannot connect: {problem}")
        raise GatewayUnavailable(f"no handshake within {timeout_s:g}s")


async def _tls_problem(url: str, ssl_context: ssl.SSLContext | None) -> str | None:
    """Why a TLS handshake with `url`'s server fails; None when it succeeds or stays unanswered.

    trio-websocket does not report a failed TLS handshake (a certificate that is not trusted,
    expired, or for another name): it waits out the handshake timeout instead
    (python-trio/trio-websocket#199). After such a timeout, one bare TLS handshake, bounded by
    `TLS_DIAGNOSIS_S`, says what was wrong.
    """
    parts = urlsplit(url)
    context = ssl_context or ssl.create_default_context()
    with trio.move_on_after(TLS_DIAGNOSIS_S):
        try:
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname or "", parts.port or 443, ssl_context=context, https_compatible=True
            )
            async with stream:
                await stream.do_handshake()
        except (OSError, trio.BrokenResourceError) as exc:
            return _os_reason(exc)
    return None


def describe_close(closed: ConnectionClosed) -> str:
    """A close as one short phrase: `code 1012 (hub restarted)`."""
    reason: CloseReason | None = closed.reason
    if reason is None:
        return "connection closed"
    text = f"code {reason.code}"
    return f"{text} ({reason.reason})" if reason.reason else text


def _first_error(exc: ValidationError) -> str:
    first = first_error(exc)
    location = dotted_location(first)
    return f"{location}: {first['msg']}" if location else first["msg"]


def _rejection_body(body: bytes | None) -> tuple[str, str]:
    """`(error, detail)` from the gateway's JSON error body, empty strings when there is none."""
    try:
        payload = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(payload, dict):
        return "", ""
    return str(payload.get("error") or ""), str(payload.get("detail") or "")


def _os_reason(error: BaseException | None) -> str:
    """The most specific OS-level or TLS reason inside `error` ("connection refused"), else its
    text."""
    pending: list[BaseException] = [error] if error is not None else []
    while pending:
        current = pending.pop(0)
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate not accepted: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS handshake failed: {(current.reason or str(current)).lower()}"
        if isinstance(current, OSError) and current.errno is not None:
            # trio puts the address into strerror; the plain system text reads better.
            text = os.strerror(current.errno) if current.errno > 0 else current.strerror
            return (text or f"error {current.errno}").lower()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return str(error) if error is not None else "unknown error"
