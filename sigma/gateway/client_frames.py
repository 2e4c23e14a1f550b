"""What a session does with its client's frames: read them, meter them, answer them.

`ClientFrames` holds the reading half of `sigma.gateway.session.ClientSession`: the receive loop,
which runs in the session's own task, and the answers to what it reads. A WebSocket ping is
answered with a pong queued as a control frame; a protocol `ping` with a `pong` reply; a
`refresh` with the checked token's new deadline (or an error); a subscription command goes to
the hub; a frame that does not decode gets an error reply.

Client frames are metered by `sigma.gateway.limits.MessageRateLimit` before they are even decoded:
frames past the budget are dropped with a paced `rate_limited` reply, sustained abuse closes
with 4029. A binary message closes the connection with 1003 (the protocol is JSON in text
frames, RFC 6455 7.4.1: a type of data the endpoint cannot accept).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from sigma.errors import PeerGone
from sigma.gateway.auth import SessionAuth, TokenRejected
from sigma.gateway.limits import MessageRateLimit, Verdict
from sigma.gateway.resume_request import ResumeRequest
from sigma.gateway.session_settings import SessionSettings
from sigma.hub.frames import Frame, reply_frame
from sigma.hub.messages import Command, HubMessage
from sigma.hub.outbox import Outbox, OutboxClosed
from sigma.protocol.client_frames import Ping, ProtocolViolation, Refresh, decode_client_frame
from sigma.protocol.codes import CloseCode, ErrorCode
from sigma.protocol.replies import error_reply, pong, token_refreshed
from sigma.protocol.server_messages import Reply
from sigma.websocket.connection import ConnectionClosing, ServerConnection
from sigma.websocket.frames import pong_frame

log = structlog.get_logger("sigma.session")


class ClientFrames:
    """The reading half of a `ClientSession`: its receive loop and the answers to client frames.

    A base class of the session rather than an object of its own, so that a connection carries
    no extra object and the receive loop reads the session's attributes as it always has.
    `_auth` and `_rate`, which only this half replaces, are its slots; the others below are the
    session's, set by `ClientSession.__init__`.
    """

    __slots__ = ("_auth", "_rate")

    client_id: str
    connection: ServerConnection
    outbox: Outbox
    settings: SessionSettings
    _hub: trio.MemorySendChannel[HubMessage]
    _resume: ResumeRequest
    _auth: SessionAuth | None
    _token_expiry: trio.CancelScope | None
    _rate: MessageRateLimit | None

    def _answer_ping(self, payload: bytes) -> None:
        """A WebSocket ping from the client: queue its pong as a control frame."""
        with contextlib.suppress(OutboxClosed):
            self.outbox.put(Frame(pong_frame(payload), "pong"), "control")
            self.outbox.flush()

    async def _read_frames(self) -> None:
        """Read client messages until the connection ends; what arrives once the outbox is
        closed (the close frame is on its way) is read and dropped."""
        connection = self.connection
        outbox = self.outbox
        try:
            while True:
                frame = await connection.receive_message()
                if outbox.close_reason is not None:
                    continue
                if isinstance(frame, bytes):
                    outbox.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
                    continue
                now = trio.current_time()
                verdict = (self._rate or self._start_metering(now)).check(now)
                if verdict is Verdict.ACCEPT:
                    await self._handle_frame(frame)
                elif verdict is Verdict.REJECT_AND_TELL:
                    self._tell_rate_limited()
                elif verdict is Verdict.CLOSE:
                    log.info(
                        "Client closed for sustained abuse of the rate limit",
                        client_id=self.client_id,
                    )
                    outbox.close(CloseCode.RATE_LIMITED, "rate limited")
        except ConnectionClosing as closing:
            if not closing.by_peer:
                log.info(
                    "Client broke the WebSocket protocol",
                    client_id=self.client_id,
                    code=closing.code,
                    reason=closing.reason,
                )
            outbox.close(closing.code, closing.reason)
            if not closing.by_peer:
                # The parser's state is lost: drop the raw bytes until the peer closes.
                await connection.discard_until_eof()
            # After the peer's close frame, the close reply goes out and TCP is closed at once.
        except PeerGone:
            outbox.close(CloseCode.ABNORMAL, "client gone")

    def _start_metering(self, now: float) -> MessageRateLimit:
        settings = self.settings
        self._rate = MessageRateLimit(
            rate_per_s=settings.messages_per_s,
            burst=settings.message_burst,
            abuse_excess_frames=settings.abuse_excess_frames,
            abuse_window_s=settings.abuse_window_s,
            now=now,
        )
        return self._rate

    def _tell_rate_limited(self) -> None:
        settings = self.settings
        assert self._rate is not None, "only a metered frame is rate limited"
        dropped = self._rate.take_rejected()
        self._reply(
            error_reply(
                ErrorCode.RATE_LIMITED,
                f"too many messages: at most {settings.messages_per_s:g} a second "
                f"(bursts of {settings.message_burst}); {dropped} frame(s) dropped unread",
            )
        )

    async def _handle_frame(self, frame: str) -> None:
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
            self.outbox.put(reply_frame(reply), "reply")
            self.outbox.flush()
