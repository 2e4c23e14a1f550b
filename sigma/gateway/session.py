"""One WebSocket client from its first frame to its close: reader, sender, pings and close.

The gateway has already read the upgrade request and written the `101` (`sigma.http`); the
session owns the socket from then on, through one `sigma.websocket.connection.ServerConnection`.
It runs as a child of the gateway's session table, in as few tasks as it can, because every task
and cancel scope costs memory on every connection:
- the session's own task reads client frames (`sigma.gateway.client_frames`): pings are
  answered with a pong queued as a control frame, bad frames get an error reply, subscription
  commands go to the hub;
- `sigma.gateway.sender.send_backlog`, only while the client is behind: an idle client's events
  are written by the hub itself, straight to the socket (through the `connection.try_write`
  fault point), and the sender's task is started when the socket did not take everything, and
  ends when the backlog is written (through the `sender.write` fault point);
- `_expire_token`, only with `[auth] mode = "jwt"`: closes with 4001 when the token's `exp`
  passes; a `refresh` frame with a good token for the same subject moves that deadline.
Protocol pings are not a task of the session's: one `sigma.gateway.keepalive.KeepAlive` sweep
watches every session (`heard_at`, `send_ping`, `close_silent`).

Every way a session ends goes through one door: its outbox is closed with a close code (by the
hub for a slow consumer or a hub restart, or one client's delivery failing; by the reader when
the peer sent a close frame or broke the protocol; by the keep-alive sweep). The sender then
writes what the connection owes, the close frame and shuts the write side of TCP, while the
reader discards what still arrives until the peer closes, all within `close_timeout_s` from the
close; past that the stream is aborted. Shutdown cancels the session's task; it then closes the
outbox with 1001 itself and, in a shielded scope bounded by the same timeout, writes the close
frame and waits for the peer to close, unless a cancelled write left the framing torn (then the
stream is aborted at once). A client that stopped reading can never hold a session open.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import structlog
import trio

from sigma.errors import PeerGone
from sigma.faults import FaultPoint
from sigma.gateway.auth import SessionAuth
from sigma.gateway.client_frames import ClientFrames
from sigma.gateway.keepalive import KeepAlive
from sigma.gateway.limits import Lease, MessageRateLimit
from sigma.gateway.resume_request import ResumeRequest
from sigma.gateway.sender import send_backlog
from sigma.gateway.session_settings import SessionSettings
from sigma.hub.frames import PING_FRAME
from sigma.hub.messages import UNDELIVERABLE, Client, HubMessage, Join, Leave
from sigma.hub.outbox import CloseReason, Outbox, OutboxClosed
from sigma.protocol.codes import CloseCode
from sigma.protocol.event_types import CORE_EVENT_TYPES
from sigma.websocket.connection import ServerConnection

log = structlog.get_logger("sigma.session")


class ClientSession(ClientFrames):
    """One connected client. Create it, then run `run` as a supervised child."""

    __slots__ = (
        "_hub",
        "_keepalive",
        "_lease",
        "_nursery",
        "_resume",
        "_token_expiry",
        "_write_fault",
        "client_id",
        "connection",
        "outbox",
        "settings",
    )

    def __init__(
        self,
        client_id: str,
        stream: trio.abc.Stream,
        settings: SessionSettings,
        hub: trio.MemorySendChannel[HubMessage],
        resume: ResumeRequest,
        *,
        trailing: bytes = b"",
        preamble: bytes = b"",
        auth: SessionAuth | None = None,
        write_fault: FaultPoint | None = None,
        try_write_fault: FaultPoint | None = None,
        keepalive: KeepAlive | None = None,
        lease: Lease | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        """`stream` has just been upgraded and `trailing` is what arrived after the request;
        `preamble` is the upgrade's 101 response, written ahead of the first frame (the welcome);
        `lease` is the session's place in the per-address count, given back when it ends;
        `on_drop` hears how many events the queue policy dropped, each time it drops some."""
        self.client_id = client_id
        self.settings = settings
        self.connection = ServerConnection(
            stream,
            trailing=trailing,
            preamble=preamble,
            max_message_bytes=settings.max_frame_bytes,
            on_ping=self._answer_ping,
            fault=try_write_fault,
            defer_to=write_fault,
        )
        self.outbox = Outbox(
            settings.queue_size,
            settings.slow_client_policy,
            on_close=self._start_closing_clock,
            on_drop=on_drop,
        )
        direct = self.connection.try_write if self.connection.can_write_directly else None
        self.outbox.attach(self._start_sender, direct)
        self._hub = hub
        self._resume = resume
        self._auth = auth
        self._write_fault = write_fault or FaultPoint("sender.write")
        self._keepalive = keepalive
        self._lease = lease
        # The nursery everything the session does runs in, while it runs; its cancel scope's
        # deadline is the closing clock.
        self._nursery: trio.Nursery | None = None
        # The token's deadline in trio time, fixed now (at the handshake) from its `exp`.
        self._token_expiry = (
            trio.CancelScope(deadline=trio.current_time() + auth.remaining_s()) if auth else None
        )
        # Made at the client's first frame (most clients send none). Its buckets start full,
        # as they would have been by then had it been made now.
        self._rate: MessageRateLimit | None = None

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the hub, serve until closed; `started(client_id)` once joined.

        Resource handling: always closes the stream and tells the hub it left. Cancelled from
        outside (shutdown, or its supervisor stopping it), it still closes with 1001, bounded
        by the close timeout (see the module docstring).
        """
        scope: trio.CancelScope | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                scope = nursery.cancel_scope
                join = Join(self._client(), self._resume.since, self._resume.epoch)
                try:
                    self._hub.send_nowait(join)  # with room, no trip through the run loop
                except trio.WouldBlock:
                    await self._hub.send(join)
                task_status.started(self.client_id)
                if self._token_expiry is not None:
                    nursery.start_soon(self._expire_token, self._token_expiry)
                if self._keepalive is not None:
                    self._keepalive.add(self)
                await self._read_frames()
                if self._token_expiry is not None:
                    self._token_expiry.cancel()
        finally:
            self._nursery = None
            out_of_time = scope is not None and trio.current_time() >= scope.deadline
            await self._finish(out_of_time=out_of_time)

    def _start_sender(self) -> None:
        """The outbox's `wake`: start the sender's task for a backlog (or the close frame)."""
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(self._send)

    async def _send(self) -> None:
        try:
            await send_backlog(self.outbox, self.connection, self._write_fault)
        except PeerGone as exc:
            # Closed while still marked as sending, so the close starts no sender of its own.
            self.outbox.close(CloseCode.ABNORMAL, "client gone")
            self.outbox.sending = False
            log.debug("Client socket gone", client_id=self.client_id, error=str(exc))
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()

    async def _finish(self, *, out_of_time: bool) -> None:
        interrupted = self.outbox.close_reason is None  # neither side asked to close
        if interrupted:
            if _being_cancelled():
                self.outbox.close(CloseCode.GOING_AWAY, "server shutting down")
            else:
                self.outbox.close(CloseCode.INTERNAL_ERROR, "internal error")
        if self._keepalive is not None:
            self._keepalive.discard(self)
        if self._lease is not None:
            self._lease.release()
        # Best effort: the hub also drops closed outboxes on its next delivery.
        with contextlib.suppress(*UNDELIVERABLE):
            self._hub.send_nowait(Leave(self.client_id))
        close = self.outbox.close_reason
        connection = self.connection
        with trio.CancelScope(shield=True) as cleanup:
            cleanup.deadline = trio.current_time() + self.settings.close_timeout_s
            try:
                if interrupted and not connection.broken:
                    assert close is not None
                    with contextlib.suppress(PeerGone):
                        await connection.send_close(close.code, close.reason)
                        await connection.wait_for_close_reply()
            finally:  # also when the close timeout cut the wait short: a peer that never answers
                await connection.aclose()  # closes at once, even in a cancelled scope
        if self.settings.log_debug:
            log.debug(
                "Client session closed",
                client_id=self.client_id,
                code=close.code if close else None,
                reason=close.reason if close else None,
                aborted=out_of_time or cleanup.cancelled_caught or connection.broken,
            )

    def _client(self) -> Client:
        return Client(
            client_id=self.client_id,
            outbox=self.outbox,
            allowed=self._resume.allowed,
            subscriptions=self._resume.types
            if self._resume.types is not None
            else self._resume.allowed & CORE_EVENT_TYPES,
        )

    def _start_closing_clock(self, _: CloseReason) -> None:
        """From the moment the outbox closes, the session has `close_timeout_s` to finish."""
        if self._nursery is not None:
            self._nursery.cancel_scope.deadline = (
                trio.current_time() + self.settings.close_timeout_s
            )

    # --- keep-alive (`sigma.gateway.keepalive.Peer`) -------------------------------------------

    def heard_at(self) -> float:
        """When bytes last arrived from the client (trio time)."""
        return self.connection.received_at

    def send_ping(self) -> None:
        """Queue a WebSocket ping; the client's pong shows in `heard_at`.

        Never raises: the keep-alive sweep serves every session, so a failure here (inside the
        direct write the flush may make) closes this client with 1011 and no other.
        """
        try:
            self.outbox.put(PING_FRAME, "control")
            self.outbox.flush()
        except OutboxClosed:
            pass
        except Exception:
            log.exception("Pinging a client failed; closing it", client_id=self.client_id)
            self.outbox.close(CloseCode.INTERNAL_ERROR, "internal error")

    def close_silent(self) -> None:
        """Close with 1011: the client did not answer its ping."""
        log.info("Client did not answer ping", client_id=self.client_id)
        self.outbox.close(CloseCode.INTERNAL_ERROR, "ping timeout")

    # --- the token's expiry --------------------------------------------------------------------

    async def _expire_token(self, expiry: trio.CancelScope) -> None:
        with expiry:
            await trio.sleep_forever()
        if expiry.cancelled_caught and self.outbox.close_reason is None:
            log.info("Client token expired", client_id=self.client_id)
            self.outbox.close(CloseCode.TOKEN_EXPIRED, "token expired")


def _being_cancelled() -> bool:
    """Whether the calling task is inside a cancelled (and unshielded) scope."""
    return trio.current_effective_deadline() == -math.inf
