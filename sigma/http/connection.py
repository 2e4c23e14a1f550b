"""The server side of one HTTP/1.1 connection: requests in, responses out, h11 in between.

Over a plain `trio.SocketStream` the connection reads and writes the (non-blocking) socket with
one system call each when it can, waiting in trio only when the socket is not ready: a trio
stream's `receive_some` and `send_all` each pass through the scheduler once more even when the
call succeeds at once, which on a keep-alive connection serving small requests (the publish API)
cost more than the request. Each request still waits once for its bytes (`wait_readable` always
parks), so a connection never keeps the others from running; other streams (TLS, tests) go
through `receive_some` / `send_all` as usual.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import orjson
import trio
from wsproto.utilities import generate_accept_token

from sigma.errors import PeerGone
from sigma.http.head_watch import HeadWatch
from sigma.http.request import (
    MAX_HEAD_BYTES,
    SUPPORTED_HTTP_VERSIONS,
    HttpError,
    HttpRequest,
    TimedOut,
    head_too_large,
    remote_protocol_error,
)
from sigma.http.response import END_OF_MESSAGE, SWITCH_HEADERS, response_head

RECEIVE_CHUNK_BYTES = 64 * 1024
NOTHING_RECEIVED = (b"", False)
"""`h11.Connection.trailing_data` when no byte waits unparsed and the peer has not closed."""


class HttpServerConnection:
    """The server side of one HTTP/1.1 connection.

    Error handling: protocol errors from the peer raise `HttpError(400 ...)`; a closed or broken
    transport raises `PeerGone`. Neither is our fault, and the caller answers or drops.
    """

    def __init__(
        self, stream: trio.abc.Stream, *, max_body_bytes: int, peer: str = "unknown"
    ) -> None:
        """`peer`: the client's IP address, for the caller's limits and logs."""
        self.stream = stream
        self.peer = peer
        self.max_body_bytes = max_body_bytes
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._declared_length: int | None = None  # the current request's Content-Length
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._first_read = True
        self._head_scope = trio.CancelScope()  # cancelled by a `HeadWatch` under `serving()`
        self._head_due = math.inf  # when the head waited for under `serving()` is overdue
        self._serving = False

    @contextlib.contextmanager
    def serving(self, watch: HeadWatch) -> Iterator[None]:
        """Enter around the request loop: one cancel scope serves every request head's timeout.

        Inside it, `next_request(timeout_s)` only notes when its head is due, and `watch`'s
        sweep cancels the scope of a connection whose head is overdue: no deadline is set or
        moved in trio per request (two moves cost about 25k instructions, 3.5 % of a publish),
        and entering a scope per head would cost more still. So under `serving()` a head times
        out between `timeout_s` and `timeout_s` plus the watch's `granularity_s` after its
        wait began. Outside it each head wait gets a deadline scope of its own, to the
        instant. After a `TimedOut` from `next_request` the scope stays cancelled: the
        connection is finished, and the caller leaves the block.
        """
        with self._head_scope:
            self._serving = True
            watch.add(self)
            try:
                yield
            finally:
                watch.discard(self)
                self._serving = False

    def cancel_overdue_head(self, now: float) -> None:
        """Time out the head being waited for under `serving()` if it was due by `now`."""
        if self._head_due <= now:
            self._head_scope.cancel()

    async def _receive(self) -> bytes:
        """The next bytes from the peer (b"" at its end of stream)."""
        sock = self._socket
        if sock is None:
            return bytes(await self.stream.receive_some(RECEIVE_CHUNK_BYTES))
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return self._read_now(sock)
            except BlockingIOError:  # woken without data after all: wait again
                continue

    async def _receive_by(self, deadline: float) -> bytes:
        """`_receive`, raising `TimedOut` when nothing came by `deadline` (trio time)."""
        with trio.move_on_at(deadline):
            return await self._receive()
        raise TimedOut

    def _first_bytes(self) -> bytes | None:
        """On a new connection, what has arrived already (None: nothing yet, or not new).

        A new connection's request has usually arrived by the time it is served: read at once,
        it costs no deadline scope, no epoll registration and no trip through the run loop.
        """
        if not self._first_read or self._socket is None:
            return None
        self._first_read = False
        try:
            return self._read_now(self._socket)
        except BlockingIOError:
            return None

    @staticmethod
    def _read_now(sock: trio.socket.SocketType) -> bytes:
        """What `sock` holds now; `BlockingIOError` when nothing."""
        try:
            return os.read(sock.fileno(), RECEIVE_CHUNK_BYTES)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def _send(self, data: bytes) -> None:
        """Write `data`: what the socket takes at once in one call, the rest through trio."""
        sock = self._socket
        sent = 0
        if sock is not None:
            try:
                sent = os.write(sock.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])

    async def _next_event(self, deadline: float = math.inf) -> Any:
        """The next h11 event, reading from the peer while h11 needs data.

        Raises `TimedOut` when the data it needs has not come by `deadline` (trio time). The
        deadline's cancel scope is opened only around a wait: what is already buffered (a body
        that came with its head) costs none.
        """
        while True:
            event = self._buffered_event()
            if event is not h11.NEED_DATA:
                return event
            await self._feed(deadline)

    def _buffered_event(self) -> Any:
        """The next h11 event from the bytes it holds (`h11.NEED_DATA` when it needs more)."""
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise remote_protocol_error(exc) from None

    async def _feed(self, deadline: float) -> None:
        """Wait for the peer's next bytes (`TimedOut` after `deadline`) and hand them to h11."""
        try:
            data = self._first_bytes()
            if data is None:  # without a deadline, one coroutine less between here and the wait
                data = await (
                    self._receive() if deadline == math.inf else self._receive_by(deadline)
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(str(exc)) from None
        try:
            self._h11.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise remote_protocol_error(exc) from None

    async def next_request(self, timeout_s: float = math.inf) -> HttpRequest | None:
        """Wait for the next request head; None once the peer closed between requests.

        Raises `TimedOut` when the whole head has not arrived within `timeout_s` (inside
        `serving()`, also when it came just as the deadline passed).
        """
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        deadline = trio.current_time() + timeout_s
        if self._serving and deadline != math.inf:
            event = await self._head_event_by(deadline)
        else:
            event = await self._head_event(deadline)
        if not isinstance(event, h11.Request):
            if isinstance(event, h11.ConnectionClosed):
                return None
            raise HttpError(400, "bad_request", f"unexpected {type(event).__name__}")
        if event.http_version not in SUPPORTED_HTTP_VERSIONS:
            raise HttpError(
                400,
                "unsupported_http_version",
                f"HTTP/{event.http_version.decode('ascii', 'replace')} is not spoken here; "
                "use HTTP/1.1",
            )
        # One pass over the headers: lowered names, the head's size and the declared length.
        headers: list[tuple[bytes, bytes]] = []
        head_bytes = len(event.target)
        declared_length: int | None = None
        for raw_name, value in event.headers.raw_items():
            name = raw_name.lower()
            headers.append((name, value))
            head_bytes += len(name) + len(value) + 4
            if name == b"content-length":  # h11 kept one, a well-formed integer
                declared_length = int(value)
        # h11 bounds a head only while it is incomplete; one that arrived whole is checked here.
        if head_bytes > MAX_HEAD_BYTES:
            raise head_too_large()
        self._declared_length = declared_length
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        if "#" in path or "://" in path:  # rare forms (absolute-form, fragments): urlsplit
            parts = urlsplit(target)
            path, query = parts.path, parts.query
        return HttpRequest(  # positional: a third cheaper than by keyword (about 3k of 7k)
            event.method.decode("ascii", "replace"),  # method
            target,
            path,
            parse_qs(query) if query else {},  # query
            tuple(headers),
            event,  # raw
        )

    async def _head_event(self, deadline: float) -> Any:
        """The request head's h11 event, by `deadline` (`TimedOut`)."""
        if self._no_byte_of_head_yet():
            await self._feed(deadline)
        return await self._next_event(deadline)

    def _no_byte_of_head_yet(self) -> bool:
        """A new cycle with no byte of its head received: read first, instead of asking h11
        for an event it cannot have."""
        return self._h11.their_state is h11.IDLE and self._h11.trailing_data == NOTHING_RECEIVED

    async def _head_event_by(self, deadline: float) -> Any:
        """The request head's event, by `deadline` under `serving()` (`TimedOut`): its
        `HeadWatch` cancels the scope once the head is overdue."""
        scope = self._head_scope
        self._head_due = deadline
        try:  # `_head_event` without a deadline, inlined: one coroutine less per request
            if self._no_byte_of_head_yet():
                await self._feed(math.inf)
            event = await self._next_event()
        except trio.Cancelled:
            if scope.cancel_called:
                raise TimedOut from None
            raise
        finally:
            self._head_due = math.inf
        if scope.cancel_called:  # the watch found it overdue as it came: too late all the same
            raise TimedOut
        return event

    async def read_body(self, timeout_s: float = math.inf) -> bytes:
        """Read the whole body of the current request, at most `max_body_bytes`.

        Raises `TimedOut` when it has not all arrived within `timeout_s`. A body that came with
        its head (the usual case) is taken from h11 without a wait, a coroutine or the clock.
        """
        if self._declared_length is not None and self._declared_length > self.max_body_bytes:
            raise HttpError(413, "body_too_large", f"body exceeds {self.max_body_bytes} bytes")
        deadline: float | None = None  # set when the body has to be waited for
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._buffered_event()
            if event is h11.NEED_DATA:
                if deadline is None:
                    deadline = trio.current_time() + timeout_s
                await self._feed(deadline)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body_bytes:
                    raise HttpError(
                        413, "body_too_large", f"body exceeds {self.max_body_bytes} bytes"
                    )
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise HttpError(400, "bad_request", "connection closed inside the body")

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Send a complete response; closes keep-alive when h11 says the cycle cannot go on."""
        # IDLE: no complete request head arrived (it was malformed or too large); h11 still lets
        # a server answer, e.g. with 400.
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        closes = self._h11.their_state is not h11.DONE  # the unread request body ends it
        head = self._h11.send(response_head(status, content_type, len(body), headers, closes))
        data = self._h11.send(h11.Data(data=body)) if body else b""
        end = self._h11.send(END_OF_MESSAGE)
        assert head is not None and data is not None and end is not None
        try:
            await self._send(head + data + end)  # one write: one system call, one segment
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(str(exc)) from None

    async def respond_json(self, status: int, payload: object) -> None:
        """Send `payload` as a JSON response."""
        await self.respond(status, orjson.dumps(payload))

    async def respond_error(self, error: HttpError) -> None:
        """Send an `HttpError` as `{"error": ..., "detail": ...}`, with its headers."""
        await self.respond(
            error.status,
            orjson.dumps({"error": error.error, "detail": error.detail}),
            headers=error.headers,
        )

    @property
    def keep_alive(self) -> bool:
        """True when another request may follow on this connection."""
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    async def accept_websocket(self, request: HttpRequest) -> tuple[bytes, bytes]:
        """Accept a checked WebSocket upgrade request: return its `101 Switching Protocols`
        response, unsent, and the bytes that arrived after the request head.

        Call right after `next_request()` returned the upgrade request (already checked by
        `sigma.gateway.upgrade`). h11 renders the 101, with the `Sec-WebSocket-Accept` that
        wsproto computes from the key; the request is read once, here, never replayed. The
        caller writes the 101 ahead of the first WebSocket frame, in the same system call (a
        `ServerConnection` takes it as its `preamble`). The trailing bytes are the client's
        first frames: from now on the stream speaks WebSocket and this object is finished with.
        Raises `PeerGone` when the peer left, `HttpError(400)` for an upgrade with a body.
        """
        # The request's end lets h11 switch protocols (its 101 may be sent from then on).
        if not isinstance(await self._next_event(), h11.EndOfMessage):
            raise HttpError(400, "bad_request", "an upgrade request has no body")
        key = (request.header("sec-websocket-key") or "").encode("latin-1")
        switch = h11.InformationalResponse(
            status_code=101,
            headers=[*SWITCH_HEADERS, (b"sec-websocket-accept", generate_accept_token(key))],
            reason=b"Switching Protocols",
        )
        response = self._h11.send(switch)
        assert response is not None
        trailing, _closed = self._h11.trailing_data
        return response, bytes(trailing)
