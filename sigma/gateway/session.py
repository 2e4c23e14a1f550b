"""One WebSocket client from handshake to close: handshake, reader, sender, pings and close.

A session runs as a temporary child of the gateway's dynamic supervisor, in as few tasks as
trio-websocket allows, because every task and cancel scope costs memory on every connection:
- the session's own task: the handshake, then the sender (`sigma.gateway.sender.Sender`), which
  writes whatever the hub queues in the outbox (through the `sender.write` fault point, when the
  gateway hands one over);
- trio-websocket's reader task (it parses incoming frames and answers pings);
- `_read_frames`: decodes client frames; pings and bad frames are answered here, subscription
  commands go to the hub;
- `_expire_token`, only with `[auth] mode = "jwt"`: closes with 4001 when the token's `exp`
  passes; a `refresh` frame with a good token for the same subject moves that deadline.
Protocol pings are not a task of the session's: one `sigma.gateway.keepalive.KeepAlive` sweep
watches every session (`heard_at`, `send_ping`, `close_silent`).

Client frames are metered by `sigma.gateway.limits.MessageRateLimit` before they are even decoded:
frames past the budget are dropped with a paced `rate_limited` reply, sustained abuse closes
with 4029.

Every way a session ends goes through one door: its outbox is closed with a close code (by the
hub for a slow consumer or a hub restart, by the reader when the peer closed, by the keep-alive
sweep). From then on the session has `close_timeout_s` to finish the write in flight and send
its close frame; past that the stream is aborted. Shutdown cancels the session's task; it then
closes the outbox with 1001 itself and, in a shielded scope bounded by the same timeout, writes
the close frame and waits for the client's, unless a cancelled write left the framing torn (then
the stream is aborted at once). A client that stopped reading can never hold a session open.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sigma.faults import FaultPoint
from sigma.gateway.auth import SessionAuth, TokenRejected
from sigma.gateway.keepalive import KeepAlive
from sigma.gateway.limits import Lease, MessageRateLimit, Verdict
from sigma.gateway.sender import ClientGone, Sender, take_over_stream_lock
from sigma.http import ReplayStream
from sigma.hub.frames import PING_FRAME, reply_frame
from sigma.hub.messages import UNDELIVERABLE, Client, Command, HubMessage, Join, Leave
from sigma.hub.outbox import CloseReason, Outbox, OutboxClosed, SlowClientPolicy
from sigma.protocol import (
    CORE_EVENT_TYPES,
    ErrorCode,
    Ping,
    ProtocolViolation,
    Refresh,
    Reply,
    decode_client_frame,
    error_reply,
    pong,
    token_refreshed,
)

log = structlog.get_logger("sigma.session")

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
PING_TIMEOUT_CODE = 1011
INTERNAL_ERROR_CODE = 1011
TOKEN_EXPIRED_CODE = 4001
RATE_LIMITED_CODE = 4029
TRIO_WEBSOCKET_QUEUE_SIZE = 4
WebSocketProtocolError = (LocalProtocolError, RemoteProtocolError)


@dataclass(frozen=True)
class SessionSettings:
    """Limits and timings shared by every session of one gateway."""

    queue_size: int
    slow_client_policy: SlowClientPolicy
    max_frame_bytes: int
    handshake_timeout_s: float
    close_timeout_s: float
    messages_per_s: float = 0.0  # 0: client frames are not rate limited
    message_burst: int = 1
    abuse_excess_frames: int = 1
    abuse_window_s: float = 1.0


@dataclass(frozen=True)
class ResumeRequest:
    """What the client asked for in its URL: resume point and allowed types."""

    since: int | None = None
    epoch: str | None = None
    allowed: frozenset[str] = CORE_EVENT_TYPES


class ClientSession:
    """One connected client. Create it, then run `run` as a supervised child."""

    __slots__ = (
        "_auth",
        "_hub",
        "_keepalive",
        "_lease",
        "_rate",
        "_resume",
        "_scope",
        "_sender",
        "_stream",
        "_token_expiry",
        "_write_fault",
        "client_id",
        "outbox",
        "settings",
    )

    def __init__(
        self,
        client_id: str,
        stream: ReplayStream,
        settings: SessionSettings,
        hub: trio.MemorySendChannel[HubMessage],
        resume: ResumeRequest,
        *,
        auth: SessionAuth | None = None,
        write_fault: FaultPoint | None = None,
        keepalive: KeepAlive | None = None,
        lease: Lease | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        """`lease` is the session's place in the per-address count, given back when it ends;
        `on_drop` hears how many events the queue policy dropped, each time it drops some."""
        self.client_id = client_id
        self.settings = settings
        self.outbox = Outbox(
            settings.queue_size,
            settings.slow_client_policy,
            on_close=self._start_closing_clock,
            on_drop=on_drop,
        )
        self._stream = stream
        self._hub = hub
        self._resume = resume
        self._auth = auth
        self._write_fault = write_fault
        self._keepalive = keepalive
        self._lease = lease
        self._sender: Sender | None = None
        # The scope everything the session does runs in (its nursery's) once it runs; its
        # deadline is the closing clock.
        self._scope: trio.CancelScope | None = None
        # The token's deadline in trio time, fixed now (at the handshake) from its `exp`.
        self._token_expiry = (
            trio.CancelScope(deadline=trio.current_time() + auth.remaining_s()) if auth else None
        )
        self._rate = MessageRateLimit(
            rate_per_s=settings.messages_per_s,
            burst=settings.message_burst,
            abuse_excess_frames=settings.abuse_excess_frames,
            abuse_window_s=settings.abuse_window_s,
            now=trio.current_time(),
        )

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Complete the handshake, join the hub, serve until closed; `started(client_id)`.

        Resource handling: always closes the stream and tells the hub it left. Cancelled from
        outside (shutdown, or its supervisor stopping it), it still closes with 1001, bounded
        by the close timeout (see the module docstring).
        Error handling: a failed or slow handshake raises before `started()`.
        """
        ws: WebSocketConnection | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                ws, sender = await self._handshake(nursery)
                await self._hub.send(Join(self._client(), self._resume.since, self._resume.epoch))
                task_status.started(self.client_id)
                self._start_serving(nursery, ws, sender)
                try:
                    await sender.run()
                except ClientGone as exc:
                    self.outbox.close(GOING_AWAY, "client gone")
                    log.debug("Client socket gone", client_id=self.client_id, error=str(exc))
                else:
                    close = self.outbox.close_reason
                    assert close is not None
                    await ws.aclose(close.code, close.reason)
                nursery.cancel_scope.cancel()
        finally:
            await self._finish(ws)

    def _start_serving(
        self, nursery: trio.Nursery, ws: WebSocketConnection, sender: Sender
    ) -> None:
        """Start reading client frames (and the token clock); let the hub write directly."""
        nursery.start_soon(self._read_frames, ws)
        if self._token_expiry is not None:
            nursery.start_soon(self._expire_token, self._token_expiry)
        if self._keepalive is not None:
            self._keepalive.add(self)
        if sender.can_write_now:
            self.outbox.attach_direct_writer(sender.write_now)

    async def _finish(self, ws: WebSocketConnection | None) -> None:
        out_of_time = self._scope is not None and trio.current_time() >= self._scope.deadline
        interrupted = self.outbox.close_reason is None  # neither side asked to close
        if interrupted:
            if ws is None:
                self.outbox.close(ABNORMAL_CLOSURE, "the handshake did not complete")
            elif _being_cancelled():
                self.outbox.close(GOING_AWAY, "server shutting down")
            else:
                self.outbox.close(INTERNAL_ERROR_CODE, "internal error")
        if self._keepalive is not None:
            self._keepalive.discard(self)
        if self._lease is not None:
            self._lease.release()
        # Best effort: the hub also drops closed outboxes on its next delivery.
        with contextlib.suppress(*UNDELIVERABLE):
            self._hub.send_nowait(Leave(self.client_id))
        with trio.CancelScope(shield=True) as cleanup:
            cleanup.deadline = trio.current_time() + self.settings.close_timeout_s
            close = self.outbox.close_reason
            sender = self._sender
            if interrupted and ws is not None and sender is not None and not sender.mid_frame:
                assert close is not None
                await self._say_goodbye(ws, sender, close)
            await trio.aclose_forcefully(self._stream)
        log.debug(
            "Client session closed",
            client_id=self.client_id,
            code=close.code if close else None,
            reason=close.reason if close else None,
            aborted=out_of_time or cleanup.cancelled_caught,
        )

    async def _say_goodbye(
        self, ws: WebSocketConnection, sender: Sender, close: CloseReason
    ) -> None:
        """The closing handshake, by hand (trio-websocket's reader is gone by now).

        Sends the close frame, reads until the client's close frame arrives (ignoring anything
        before it), and returns; the caller then closes the TCP connection, as RFC 6455 wants
        the server to do first.
        """
        protocol = ws._wsproto
        with contextlib.suppress(
            ClientGone, trio.BrokenResourceError, trio.ClosedResourceError, *WebSocketProtocolError
        ):
            await sender.write(protocol.send(CloseConnection(close.code, close.reason)))
            while not any(isinstance(event, CloseConnection) for event in protocol.events()):
                data = await self._stream.receive_some()
                if not data:
                    return
                protocol.receive_data(data)

    def _client(self) -> Client:
        return Client(
            client_id=self.client_id,
            outbox=self.outbox,
            allowed=self._resume.allowed,
            subscriptions=self._resume.allowed,
        )

    async def _handshake(self, nursery: trio.Nursery) -> tuple[WebSocketConnection, Sender]:
        with trio.fail_after(self.settings.handshake_timeout_s):
            request = await wrap_server_stream(
                nursery,
                self._stream,
                message_queue_size=TRIO_WEBSOCKET_QUEUE_SIZE,
                max_message_size=self.settings.max_frame_bytes,
            )
            ws = await request.accept()
            lock = await take_over_stream_lock(ws)
        self._sender = Sender(ws, self.outbox, lock, self._write_fault)
        return ws, self._sender

    def _start_closing_clock(self, _: CloseReason) -> None:
        """From the moment the outbox closes, the session has `close_timeout_s` to finish."""
        if self._scope is not None:
            self._scope.deadline = trio.current_time() + self.settings.close_timeout_s

    # --- keep-alive (`sigma.gateway.keepalive.Peer`) -------------------------------------------

    def heard_at(self) -> float:
        """When bytes last arrived from the client (trio time)."""
        return self._stream.received_at

    def send_ping(self) -> None:
        """Queue a WebSocket ping; the client's pong shows in `heard_at`."""
        with contextlib.suppress(OutboxClosed):
            self.outbox.send_first(PING_FRAME)

    def close_silent(self) -> None:
        """Close with 1011: the client did not answer its ping."""
        log.info("Client did not answer ping", client_id=self.client_id)
        self.outbox.close(PING_TIMEOUT_CODE, "ping timeout")

    # --- client frames -------------------------------------------------------------------------

    async def _expire_token(self, expiry: trio.CancelScope) -> None:
        with expiry:
            await trio.sleep_forever()
        if expiry.cancelled_caught:
            log.info("Client token expired", client_id=self.client_id)
            self.outbox.close(TOKEN_EXPIRED_CODE, "token expired")

    async def _read_frames(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                frame = await ws.get_message()
                verdict = self._rate.check(trio.current_time())
                if verdict is Verdict.ACCEPT:
                    await self._handle_frame(frame)
                elif verdict is Verdict.REJECT_AND_TELL:
                    self._tell_rate_limited()
                elif verdict is Verdict.CLOSE:
                    log.info(
                        "Client closed for sustained abuse of the rate limit",
                        client_id=self.client_id,
                    )
                    self.outbox.close(RATE_LIMITED_CODE, "rate limited")
                    return
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason is not None else NORMAL_CLOSURE
            self.outbox.close(code, (closed.reason.reason if closed.reason else None) or "")

    def _tell_rate_limited(self) -> None:
        settings = self.settings
        dropped = self._rate.take_rejected()
        self._reply(
            error_reply(
                ErrorCode.RATE_LIMITED,
                f"too many messages: at most {settings.messages_per_s:g} a second "
                f"(bursts of {settings.message_burst}); {dropped} frame(s) dropped unread",
            )
        )

    async def _handle_frame(self, frame: str | bytes) -> None:
        try:
            message = decode_client_frame(frame)
        except ProtocolViolation as violation:
            self._reply(violation.reply())
            return
        if isinstance(message, Ping):
            self._reply(pong(message.id))
        elif isinstance(message, Refresh):
            self._reply(self._refresh(message))
        else:
            await self._hub.send(Command(self.client_id, message))

    def _refresh(self, message: Refresh) -> Reply:
        """Check a refreshed token; on success move the expiry deadline. Returns the reply."""
        if self._auth is None:
            return error_reply(
                ErrorCode.INVALID_MESSAGE,
                "this server takes no tokens ([auth] mode is none); there is nothing to refresh",
                message.id,
            )
        try:
            claims = self._auth.authenticator.verify(message.token)
        except TokenRejected as rejected:
            return error_reply(
                ErrorCode.INVALID_TOKEN, f"{rejected.error}: {rejected.detail}", message.id
            )
        if claims.subject != self._auth.claims.subject:
            return error_reply(
                ErrorCode.FORBIDDEN, "the new token names a different subject (sub)", message.id
            )
        if not claims.allowed >= self._resume.allowed:
            return error_reply(
                ErrorCode.FORBIDDEN,
                "the new token allows fewer event types; reconnect with it instead",
                message.id,
            )
        self._auth = replace(self._auth, claims=claims)
        if self._token_expiry is not None:
            self._token_expiry.deadline = trio.current_time() + self._auth.remaining_s()
        log.debug("Client token refreshed", client_id=self.client_id, expires_at=claims.expires_at)
        return token_refreshed(datetime.fromtimestamp(claims.expires_at, UTC), message.id)

    def _reply(self, reply: Any) -> None:
        with contextlib.suppress(OutboxClosed):
            self.outbox.send_beyond_capacity(reply_frame(reply))


def _being_cancelled() -> bool:
    """Whether the calling task is inside a cancelled (and unshielded) scope."""
    return trio.current_effective_deadline() == -math.inf
