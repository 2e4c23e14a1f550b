"""The listening socket: HTTP routes and the WebSocket upgrade at `/ws`, on one port.

Each TCP connection's request head is read by h11 (`sigma.http`). Plain HTTP (`/health`, `/metrics`,
`/api/publish` (answered by `sigma.gateway.publish`), and `/admin/faults` when `[faults] admin` is
on) is answered here, the dashboard (`/`, `/static/...`, `/favicon.ico`) by
`sigma.gateway.static_files`; an upgrade on `/ws` gets its `101` from h11 (the request is read once,
never replayed), and the connection becomes a `ClientSession` on a
`sigma.websocket.connection.ServerConnection`, started as a temporary child of the sessions' dynamic
supervisor (`start_child_soon`: the handler does not wait for it). The `101` is held by the
connection and leaves with the welcome, in one write. A failure while serving one connection is
logged and ends that connection only.

With `[gateway] tls_cert_file` and `tls_key_file` set, every accepted connection is first wrapped
in TLS, and nothing but TLS is spoken on the port (`sigma.gateway.tls`).

The upgrade is where the edge is guarded, in this order, each refusal a JSON error and nothing
upgraded: a well-formed WebSocket handshake (400/426), an allowed `Origin` (403), a valid token
with `[auth] mode = "jwt"` (401) (all in `sigma.gateway.upgrade`), a well-formed `since` and
known `types` in the URL (400, `sigma.gateway.resume_request`), then room under the total and
per-address connection limits (503), counted here.
"""

from __future__ import annotations

import functools
import logging
import ssl
import uuid

import structlog
import trio

from sigma.config.loading import Config
from sigma.errors import PeerGone, TooManyChildren
from sigma.faults import Faults
from sigma.gateway.admin_faults import ADMIN_FAULTS_PATH, answer_admin, check_admin_access
from sigma.gateway.auth import Authenticator
from sigma.gateway.keepalive import KeepAlive
from sigma.gateway.limits import AddressLimit
from sigma.gateway.publish import PUBLISH_PATH, PUBLISH_REPLY_MARGIN_S, PublishApi
from sigma.gateway.resume_request import resume_request_of
from sigma.gateway.session import ClientSession
from sigma.gateway.session_settings import SessionSettings
from sigma.gateway.static_files import StaticFiles
from sigma.gateway.tls import secure
from sigma.gateway.upgrade import (
    authenticate,
    check_origin,
    check_websocket_handshake,
)
from sigma.health import HealthBoard
from sigma.http.connection import HttpServerConnection
from sigma.http.head_watch import HeadWatch
from sigma.http.request import HttpError, HttpRequest, TimedOut
from sigma.hub.intake import HubIntake
from sigma.hub.messages import HubMessage
from sigma.keys import load_server_tls
from sigma.metrics import METRICS_CONTENT_TYPE, Metrics
from sigma.protocol.event_types import KNOWN_EVENT_TYPES
from sigma.supervision.supervisor import ChildSpec, DynamicSupervisor, Restart

log = structlog.get_logger("sigma.gateway")

CLOSE_TIMEOUT_S = 1.0
HEAD_WATCH_MAX_LATE_S = 1.0
"""A kept-alive connection's request head times out at most this late (and at most a tenth of
`handshake_timeout_s` late): the granularity of the gateway's `HeadWatch`."""
ROUTES: dict[str, frozenset[str]] = {
    "/health": frozenset({"GET", "HEAD"}),
    "/metrics": frozenset({"GET"}),
    PUBLISH_PATH: frozenset({"POST"}),
    "/ws": frozenset({"GET"}),
}


class Gateway:
    """Serves one TCP connection at a time per handler task; `sigma.gateway.run.run_gateway`
    listens for it and runs its sweeps.

    `/metrics` renders `metrics`, and answers 404 without it. `faults` is the tree's fault
    registry: the sessions' `sender.write` point, and what `/admin/faults` arms. `keepalive` is
    the table of live sessions whose pings this gateway's sweep sends; pass the tree's, so that
    sessions outliving a gateway restart stay watched (a new table when not given). `intake` is
    the gate in front of `hub` that `POST /api/publish` goes through (`sigma.hub.intake`); pass
    the one the hub was started with, so that the API sees when the herd lags (without it, one
    that only watches the inbox's room). Sessions are started as children of `sessions`.
    """

    def __init__(
        self,
        config: Config,
        hub: trio.MemorySendChannel[HubMessage],
        sessions: DynamicSupervisor,
        health: HealthBoard,
        metrics: Metrics | None = None,
        faults: Faults | None = None,
        keepalive: KeepAlive | None = None,
        intake: HubIntake | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.publish_api = PublishApi(
            intake or HubIntake(hub),
            key=config.api.key,
            wait_s=config.api.publish_wait_s,
            reply_timeout_s=config.broker.publish_timeout_s + PUBLISH_REPLY_MARGIN_S,
        )
        self.sessions = sessions
        self.health = health
        self.metrics = metrics
        self.faults = faults or Faults()
        self.keepalive = keepalive or new_keepalive(config)
        self.head_watch = HeadWatch(
            min(HEAD_WATCH_MAX_LATE_S, config.gateway.handshake_timeout_s / 10)
        )
        """Times out the heads of kept-alive connections; `sigma.gateway.run.run_gateway` runs
        its sweep."""
        self._count_drops = (
            functools.partial(metrics.count_queue_drops, config.hub.slow_client_policy)
            if metrics is not None
            else None
        )
        self.session_settings = SessionSettings(
            queue_size=config.hub.queue_size,
            slow_client_policy=config.hub.slow_client_policy,
            max_frame_bytes=config.gateway.max_frame_bytes,
            handshake_timeout_s=config.gateway.handshake_timeout_s,
            close_timeout_s=CLOSE_TIMEOUT_S,
            messages_per_s=config.limits.messages_per_s,
            message_burst=config.limits.burst,
            abuse_excess_frames=config.limits.abuse_excess_frames,
            abuse_window_s=config.limits.abuse_window_s,
            log_debug=log.is_enabled_for(logging.DEBUG),
        )
        self.authenticator = (
            Authenticator(config.auth, KNOWN_EVENT_TYPES) if config.auth.mode == "jwt" else None
        )
        self.per_address = AddressLimit(config.gateway.max_connections_per_ip)
        self.static = StaticFiles()
        gateway = config.gateway
        self.tls: ssl.SSLContext | None = (
            load_server_tls(gateway.tls_cert_file, gateway.tls_key_file)
            if gateway.tls_cert_file is not None and gateway.tls_key_file is not None
            else None
        )

    async def handle_connection(self, socket_stream: trio.SocketStream, peer: str) -> None:
        """Serve one TCP connection: HTTP requests with keep-alive, or one WebSocket upgrade.

        `peer` is the client's IP address as `accept` gave it.
        Over TLS, the TLS handshake comes first (`sigma.gateway.tls.secure`).
        Error handling: nothing escapes; a bug is logged and answered 500 when still possible.
        Resource handling: closes the stream unless a session took it over.
        """
        stream: trio.abc.Stream = socket_stream
        if self.tls is not None:
            secured = await secure(
                socket_stream, self.tls, peer, self.config.gateway.handshake_timeout_s
            )
            if secured is None:
                return
            stream = secured
        conn = HttpServerConnection(
            stream, max_body_bytes=self.config.gateway.max_http_body_bytes, peer=peer
        )
        handed_over = False
        try:
            handed_over = await self._serve_one(conn)
            if not handed_over and conn.keep_alive:
                # Kept alive: the heads that follow share one cancel scope for their timeout,
                # cancelled by the head watch (entering one costs more than a request that
                # does not wait for its head, moving its deadline twice almost as much).
                with conn.serving(self.head_watch):
                    while not handed_over and conn.keep_alive:
                        handed_over = await self._serve_one(conn)
        except HttpError as error:
            await self._answer_error(conn, error)
        except PeerGone:
            pass
        except Exception:
            log.exception("Connection handler failed")
            await self._answer_error(conn, HttpError(500, "internal_error", "see server log"))
        finally:
            if not handed_over:
                await trio.aclose_forcefully(stream)

    async def _serve_one(self, conn: HttpServerConnection) -> bool:
        """Read and answer one request; True when a WebSocket session took the connection.

        After a request that ended the connection (closed, timed out, not kept alive),
        `conn.keep_alive` is false.
        """
        try:
            request = await conn.next_request(self.config.gateway.handshake_timeout_s)
        except TimedOut:
            return False
        if request is None:
            return False
        try:
            return await self._dispatch(conn, request)
        except HttpError as error:
            await conn.respond_error(error)
            return False

    async def _answer_error(self, conn: HttpServerConnection, error: HttpError) -> None:
        try:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await conn.respond_error(error)
        except PeerGone:
            pass

    async def _dispatch(self, conn: HttpServerConnection, request: HttpRequest) -> bool:
        if request.path == PUBLISH_PATH and request.method == "POST":  # the busy route first
            await self.publish_api.answer(conn, request, self._read_body)
            return False
        if request.path == ADMIN_FAULTS_PATH:
            await self._admin_faults(conn, request)
            return False
        if StaticFiles.handles(request.path):
            await self._read_body(conn)
            await self.static.answer(conn, request)
            return False
        methods = ROUTES.get(request.path)
        if methods is None:
            raise HttpError(404, "not_found", f"no route for {request.path}")
        if request.method not in methods:
            raise HttpError(
                405, "method_not_allowed", f"{request.path} accepts {', '.join(sorted(methods))}"
            )
        if request.path == "/ws":
            return await self._upgrade(conn, request)
        if request.method in ("GET", "HEAD"):
            await self._read_body(conn)  # ends the request, so the connection can be kept alive
        if request.path == "/health":
            status, payload = self.health.report()
            await conn.respond_json(status, payload)
        else:  # /metrics: the only route left (a publish went first)
            if self.metrics is None:
                raise HttpError(404, "not_found", "no metrics are kept")
            await conn.respond(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)
        return False

    async def _admin_faults(self, conn: HttpServerConnection, request: HttpRequest) -> None:
        peer = conn.peer
        check_admin_access(enabled=self.config.faults.admin, method=request.method, peer=peer)
        body = await self._read_body(conn) if request.method == "POST" else b""
        payload = answer_admin(
            self.faults,
            method=request.method,
            point=request.query_value("point"),
            body=body,
            peer=peer,
        )
        await conn.respond_json(200, payload)

    async def _read_body(self, conn: HttpServerConnection) -> bytes:
        # A body that trickles in (slowloris) gets as long as a request head, no longer.
        try:
            return await conn.read_body(self.config.gateway.handshake_timeout_s)
        except TimedOut:
            raise HttpError(
                408, "request_timeout", "the request body did not arrive in time"
            ) from None

    async def _upgrade(self, conn: HttpServerConnection, request: HttpRequest) -> bool:
        if not request.wants_websocket:
            raise HttpError(426, "upgrade_required", "/ws speaks WebSocket only")
        check_websocket_handshake(request)
        check_origin(request, self.config.auth.allowed_origins)
        peer = conn.peer
        auth = authenticate(self.authenticator, request, peer)
        allowed = auth.claims.allowed if auth else KNOWN_EVENT_TYPES
        resume = resume_request_of(request, allowed)
        if self.sessions.child_count() >= self.config.gateway.max_connections:
            raise HttpError(503, "too_many_connections", "connection limit reached")
        lease = self.per_address.acquire(peer)
        if lease is None:
            raise HttpError(
                503, "too_many_connections_from_address", "connection limit for this address"
            )
        try:
            # Never waits (a request with a body was refused above). The 101 is not written
            # here: it leaves with the welcome, in one system call.
            response, trailing = await conn.accept_websocket(request)
        except BaseException:
            lease.release()
            raise
        stream = conn.stream
        client_id = str(uuid.uuid4())
        session = ClientSession(
            client_id,
            stream,
            self.session_settings,
            self.hub,
            resume,
            trailing=trailing,
            preamble=response,
            auth=auth,
            write_fault=self.faults.point("sender.write"),
            try_write_fault=self.faults.point("connection.try_write"),
            keepalive=self.keepalive,
            lease=lease,
            on_drop=self._count_drops,
        )
        session.outbox.attach_backlog_probe(session.connection.backlog_bytes)
        spec = ChildSpec(
            id=client_id,
            start=session.run,
            restart=Restart.TEMPORARY,
            shutdown_timeout_s=CLOSE_TIMEOUT_S + 1.0,
        )
        # Not awaited: the session's task runs on its own, and this one ends now. What the
        # session meets before it has joined the hub is the supervisor's to report.
        try:
            self.sessions.start_child_soon(spec)
        except (TooManyChildren, RuntimeError) as exc:  # full, or restarting right now
            log.info("Connection refused: no room for its session", error=str(exc))
            lease.release()  # the session will never run
            await trio.aclose_forcefully(stream)
        return True


def new_keepalive(config: Config) -> KeepAlive:
    """The live-session table for `[heartbeat] ping_interval_s` and `ping_timeout_s`."""
    return KeepAlive(config.heartbeat.ping_interval_s, config.heartbeat.ping_timeout_s)
