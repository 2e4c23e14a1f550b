"""One WebSocket client from handshake to close: handshake, reader, sender, pings and close.

A session runs as a temporary child of the gateway's dynamic supervisor. Inside it:
- trio-websocket's reader task (it parses incoming frames and answers pings);
- `_read_frames`: decodes client frames; pings and bad frames are answered here, subscription
  commands go to the hub;
- the sender (`sigma.actors.sender.pump`): writes whatever the hub queues in the outbox (through
  the `sender.write` fault point, when the gateway hands one over);
- `_ping_peer`: protocol pings every `ping_interval_s`; no pong in `ping_timeout_s` closes.
- `_expire_token` (with `[auth] mode = "jwt"`): closes with 4001 when the token's `exp` passes;
  a `refresh` frame with a good token for the same subject moves that deadline.

Client frames are metered by `sigma.limits.MessageRateLimit` before they are even decoded:
frames past the budget are dropped with a paced `rate_limited` reply, sustained abuse closes
with 4029.

Every way a session ends goes through one door: its outbox is closed with a close code (by the
hub for a slow consumer, by the reader when the peer closed, by `stop()` on shutdown). From then
on the session has `close_timeout_s` to finish the write in flight and send its close frame;
past that the stream is aborted. Shutdown is therefore a deadline on a cancel scope, and a
client that stopped reading can never hold a session open.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from sigma.actors.hub import UNDELIVERABLE, Command, HubMessage, Join, Leave
from sigma.actors.hub_state import Client, reply_frame
from sigma.actors.outbox import CloseReason, Outbox, OutboxClosed, SlowClientPolicy
from sigma.actors.sender import ClientGone, direct_writer, pump
from sigma.auth import Authenticator, Claims, TokenRejected
from sigma.faults import FaultPoint
from sigma.limits import MessageRateLimit, Verdict
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
PING_TIMEOUT_CODE = 1011
TOKEN_EXPIRED_CODE = 4001
RATE_LIMITED_CODE = 4029
TRIO_WEBSOCKET_QUEUE_SIZE = 4


@dataclass(frozen=True)
class SessionSettings:
    """Limits and timings shared by every session of one gateway."""

    queue_size: int
    slow_client_policy: SlowClientPolicy
    max_frame_bytes: int
    handshake_timeout_s: float
    close_timeout_s: float
    ping_interval_s: float
    ping_timeout_s: float
    messages_per_s: float = 0.0  # 0: client frames are not rate limited
    message_burst: int = 1
    abuse_excess_frames: int = 1
    abuse_window_s: float = 1.0


@dataclass(frozen=True)
class SessionAuth:
    """The verified token a session runs under, and what checks a refreshed one."""

    authenticator: Authenticator
    claims: Claims

    def remaining_s(self) -> float:
        """Wall-clock seconds until the current token stops being valid (leeway included)."""
        return self.claims.remaining_s(self.authenticator.leeway_s)


@dataclass(frozen=True)
class ResumeRequest:
    """What the client asked for in its URL: resume point and allowed types."""

    since: int | None = None
    epoch: str | None = None
    allowed: frozenset[str] = CORE_EVENT_TYPES


class ClientSession:
    """One connected client. Create it, then run `run_session` (or `run`) under a nursery."""

    def __init__(
        self,
        client_id: str,
        stream: trio.abc.Stream,
        settings: SessionSettings,
        hub: trio.MemorySendChannel[HubMessage],
        resume: ResumeRequest,
        *,
        auth: SessionAuth | None = None,
        write_fault: FaultPoint | None = None,
    ) -> None:
        self.client_id = client_id
        self.settings = settings
        self.outbox = Outbox(
            settings.queue_size, settings.slow_client_policy, on_close=self._start_closing_clock
        )
        self.finished = trio.Event()
        self._stream = stream
        self._hub = hub
        self._resume = resume
        self._auth = auth
        self._write_fault = write_fault
        self._scope = trio.CancelScope(shield=True)
        self._closing = trio.CancelScope()
        # The token's deadline in trio time, fixed now (at the handshake) from its `exp`.
        self._token_expiry = trio.CancelScope(
            deadline=(trio.current_time() + auth.remaining_s()) if auth else math.inf
        )
        self._rate = MessageRateLimit(
            rate_per_s=settings.messages_per_s,
            burst=settings.message_burst,
            abuse_excess_frames=settings.abuse_excess_frames,
            abuse_window_s=settings.abuse_window_s,
            now=trio.current_time(),
        )
        self._log = log.bind(client_id=client_id)

    def stop(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Ask the session to close with `code` within its close timeout; safe to call twice."""
        self.outbox.close(code, reason)
        self._scope.deadline = min(
            self._scope.deadline, trio.current_time() + self.settings.close_timeout_s
        )

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Complete the handshake, join the hub, serve until closed; `started(client_id)`.

        Resource handling: shielded from outside cancellation (use `stop()`, which bounds the
        rest with a deadline); always closes the stream and tells the hub it left.
        Error handling: a failed or slow handshake raises before `started()`.
        """
        with self._scope:
            try:
                async with trio.open_nursery() as ws_nursery:
                    ws = await self._handshake(ws_nursery)
                    await self._hub.send(
                        Join(self._client(), self._resume.since, self._resume.epoch)
                    )
                    task_status.started(self.client_id)
                    writer = direct_writer(ws, self._write_fault)
                    if writer is not None:
                        self.outbox.attach_direct_writer(writer)
                    await self._serve(ws)
                    ws_nursery.cancel_scope.cancel()
            finally:
                self.outbox.close(GOING_AWAY, "session ended")
                # Best effort: the hub also drops closed outboxes on its next delivery.
                with contextlib.suppress(*UNDELIVERABLE):
                    self._hub.send_nowait(Leave(self.client_id))
                await trio.aclose_forcefully(self._stream)
                self.finished.set()

    def _client(self) -> Client:
        return Client(
            client_id=self.client_id,
            outbox=self.outbox,
            allowed=self._resume.allowed,
            subscriptions=self._resume.allowed,
        )

    async def _handshake(self, nursery: trio.Nursery) -> WebSocketConnection:
        with trio.fail_after(self.settings.handshake_timeout_s):
            request = await wrap_server_stream(
                nursery,
                self._stream,
                message_queue_size=TRIO_WEBSOCKET_QUEUE_SIZE,
                max_message_size=self.settings.max_frame_bytes,
            )
            return await request.accept()

    async def _serve(self, ws: WebSocketConnection) -> None:
        async with trio.open_nursery() as io:
            io.start_soon(self._read_frames, ws)
            io.start_soon(self._ping_peer, ws)
            if self._auth is not None:
                io.start_soon(self._expire_token)
            with self._closing:
                try:
                    await pump(ws, self.outbox, self._write_fault)
                except ClientGone as exc:
                    self.outbox.close(GOING_AWAY, "client gone")
                    self._log.debug("Client socket gone", error=str(exc))
                else:
                    close = self.outbox.close_reason
                    assert close is not None
                    await ws.aclose(close.code, close.reason)
            io.cancel_scope.cancel()
        close = self.outbox.close_reason
        self._log.debug(
            "Client session closed",
            code=close.code if close else None,
            reason=close.reason if close else None,
            aborted=self._closing.cancelled_caught,
        )

    def _start_closing_clock(self, _: CloseReason) -> None:
        """From the moment the outbox closes, the session has `close_timeout_s` to finish."""
        self._closing.deadline = trio.current_time() + self.settings.close_timeout_s

    async def _expire_token(self) -> None:
        with self._token_expiry:
            await trio.sleep_forever()
        if self._token_expiry.cancelled_caught:
            self._log.info("Client token expired")
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
                    self._log.info("Client closed for sustained abuse of the rate limit")
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
        self._token_expiry.deadline = trio.current_time() + self._auth.remaining_s()
        self._log.debug("Client token refreshed", expires_at=claims.expires_at)
        return token_refreshed(datetime.fromtimestamp(claims.expires_at, UTC), message.id)

    def _reply(self, reply: Any) -> None:
        with contextlib.suppress(OutboxClosed):
            self.outbox.send_beyond_capacity(reply_frame(reply))

    async def _ping_peer(self, ws: WebSocketConnection) -> None:
        if math.isinf(self.settings.ping_interval_s):
            return
        while True:
            await trio.sleep(self.settings.ping_interval_s)
            with trio.move_on_after(self.settings.ping_timeout_s) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return
            if waited.cancelled_caught:
                self._log.info("Client did not answer ping", timeout_s=self.settings.ping_timeout_s)
                self.outbox.close(PING_TIMEOUT_CODE, "ping timeout")
                return


async def run_session(
    session: ClientSession, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `session` as a supervised child: cancellation becomes a graceful 1001 close.

    The session itself is shielded; when this task is cancelled (shutdown, or terminate by the
    supervisor) it calls `session.stop()`, which closes with 1001 within the close timeout.
    """
    async with trio.open_nursery() as nursery:
        client_id = await nursery.start(session.run)
        task_status.started(client_id)
        try:
            await session.finished.wait()
        finally:
            session.stop()
