"""One server-side WebSocket connection after its handshake: wsproto parses, this object writes.

Reading: bytes from the socket go into a `wsproto.Connection(ConnectionType.SERVER)`, made when
the first ones arrive (its documented API only); `receive_message()` hands the session one whole
client message at a time. Pings are answered through the `on_ping` callback (the session queues
the pong in its outbox as a control frame). Everything that ends the connection comes out as one
exception: `ConnectionClosing` (a close frame from the peer, or a protocol error that must be
answered with a close code: 1002, 1007, or 1009 for a message over `max_message_bytes`, counted
across its fragments) or `sigma.errors.PeerGone` (the peer left without a close frame).

Writing: this object is the only writer on its socket. There are two ways in:
- `try_write(data, size)`, synchronous, never waiting: the hub's direct write while no sender
  runs (`size` is `len(data)`, measured once per event by the hub). It writes what the socket
  takes with one system call; when the socket took only part of `data`, the rest is *owed* and
  kept here, and every later write pays it first, so no other bytes can ever land inside a
  frame.
- `write(data)`, awaited: the sender's write, which pays what is owed, then writes `data`.
Close frames and pongs are not written here on the side: they are frames in the outbox like any
other, and `send_close` is the sender's last write.

Why one writer is safe without a lock: trio switches tasks only at an `await`. `try_write` never
awaits, so it runs whole between two steps of any other task; and while the sender is inside
`write` (possibly parked in `send_all`), the outbox does not call `try_write` at all (it calls
it only while no sender runs), and even if something did, `try_write` refuses to write while
a write is in flight (what is owed it pays first, in the same system call). So the bytes of two
writes never interleave.

Direct writes happen only over a plain `trio.SocketStream` (its socket's file descriptor takes
`os.write`); over any other stream (TLS) `try_write` returns 0 and the sender's awaited path
carries everything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from sigma.errors import PeerGone
from sigma.faults import FaultPoint
from sigma.protocol.codes import CloseCode
from sigma.websocket.frames import close_frame
from sigma.websocket.send_queue import unsent_bytes

RECEIVE_CHUNK_BYTES = 64 * 1024
"""What wsproto reports for a close frame without a code; it is answered with 1000."""


class ConnectionClosing(Exception):
    """The connection is ending with a close frame: `code` and `reason` are what to send.

    `by_peer`: the peer sent a close frame (the code is the one to echo); otherwise the peer
    broke the protocol and the code says how (1002, 1007, 1009).
    """

    def __init__(self, code: int, reason: str, *, by_peer: bool) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class ServerConnection:
    """The server side of one WebSocket connection: the socket's only reader and only writer.

    `trailing` is what arrived after the upgrade request (the first client frames);
    `on_ping(payload)` is called for each ping (answer it with a pong carrying the payload);
    `fault` is the `connection.try_write` fault point (see `sigma.faults`); while `defer_to`
    (the sender's `sender.write` point) is armed, `try_write` writes nothing, so that every
    write then passes that point.
    """

    __slots__ = (
        "_defer_to",
        "_fault",
        "_fd",
        "_in_flight",
        "_message",
        "_message_bytes",
        "_on_ping",
        "_owed",
        "_protocol",
        "_sock",
        "_stream",
        "_waited_for_first_bytes",
        "broken",
        "closed_for_writing",
        "max_message_bytes",
        "received_at",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        trailing: bytes = b"",
        preamble: bytes = b"",
        max_message_bytes: int,
        on_ping: Callable[[bytes], None],
        fault: FaultPoint | None = None,
        defer_to: FaultPoint | None = None,
    ) -> None:
        self._stream = stream
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        # The descriptor writes go to, read once: trio's `fileno()` costs about 600 instructions
        # a call, 15 % of a delivery. `aclose()`, the only place this connection's stream is
        # closed, sets it to -1 first, so a later write fails (EBADF) as on a closed socket and
        # never reaches a descriptor the kernel has since given to another connection. Reads ask
        # the socket's `fileno()` each time: the reader may still be waiting when it closes.
        self._fd = self._sock.fileno() if self._sock is not None else -1
        # Made when the first client bytes arrive: most clients only listen, and an idle
        # connection then holds no parser (about 1 KB less each, and less to accept).
        self._protocol = (
            Connection(ConnectionType.SERVER, trailing_data=trailing) if trailing else None
        )
        self._waited_for_first_bytes = bool(trailing)  # or they came with the handshake
        self._on_ping = on_ping
        self._fault = fault or FaultPoint("connection.try_write")
        self._defer_to = defer_to or FaultPoint("sender.write")
        self._message: list[str | bytes | bytearray] = []
        self._message_bytes = 0
        # The handshake's 101, held back so that it leaves with the first frame in one write.
        self._owed = preamble
        self._in_flight = False
        self.max_message_bytes = max_message_bytes
        self.received_at = trio.current_time()
        """When bytes last arrived from the peer (trio time): how keep-alive knows it lives."""
        self.broken = False
        """A write failed or was cut off part-way: the framing is lost, only an abort is left."""
        self.closed_for_writing = False
        """The close frame went out: nothing more may be written."""

    @property
    def can_write_directly(self) -> bool:
        """Whether `try_write` can ever write (the transport is a plain socket)."""
        return self._sock is not None

    @property
    def owes(self) -> bool:
        """Whether the rest of a frame the socket took only in part is waiting to be written."""
        return bool(self._owed)

    def backlog_bytes(self) -> int:
        """What the client has not acknowledged yet, in bytes: what is owed here plus the
        kernel's send queue (`sigma.websocket.send_queue`); the hub's overload rule counts it
        as the client's lag. One system call."""
        stream = self._stream
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        if isinstance(transport, trio.SocketStream):
            return len(self._owed) + unsent_bytes(transport.socket)
        return len(self._owed)

    # --- reading -------------------------------------------------------------------------------

    async def receive_message(self) -> str | bytes:
        """Wait for the next whole client message: `str` for text, `bytes` for binary.

        Raises `ConnectionClosing` for a close frame or a protocol error, `PeerGone` when the
        peer left without one.
        """
        while True:
            protocol = self._protocol
            for event in protocol.events() if protocol is not None else ():
                if isinstance(event, TextMessage | BytesMessage):
                    message = self._add_fragment(event)
                    if message is not None:
                        return message
                elif isinstance(event, Ping):
                    self._on_ping(bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    raise self._closing(event)
                # A pong needs nothing: its arrival already counts in `received_at`.
            data = await self._receive_some()
            if not data:
                raise PeerGone("the peer closed the connection without a close frame")
            if protocol is None:
                self._protocol = Connection(ConnectionType.SERVER, trailing_data=data)
            else:
                protocol.receive_data(data)

    def _add_fragment(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        data = event.data
        size = len(data.encode()) if isinstance(data, str) else len(data)
        self._message_bytes += size
        if self._message_bytes > self.max_message_bytes:
            raise ConnectionClosing(
                CloseCode.MESSAGE_TOO_BIG,
                f"message over {self.max_message_bytes} bytes",
                by_peer=False,
            )
        if not event.message_finished:
            self._message.append(data)
            return None
        parts, self._message, self._message_bytes = self._message, [], 0
        if not parts:
            return data if isinstance(data, str) else bytes(data)
        parts.append(data)
        if isinstance(data, str):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if not isinstance(part, str))

    def _closing(self, event: CloseConnection) -> ConnectionClosing:
        assert self._protocol is not None, "a close event comes from the parser"
        if self._protocol.state is ConnectionState.OPEN:
            # wsproto reports a frame it could not parse as a close it wants sent.
            return ConnectionClosing(event.code, event.reason or "", by_peer=False)
        code = CloseCode.NORMAL if event.code == CloseCode.NO_STATUS else event.code
        return ConnectionClosing(code, event.reason or "", by_peer=True)

    async def _receive_some(self) -> bytes:
        """The next bytes from the peer (b"" at end-of-stream); `PeerGone` when it broke.

        Over a plain socket this reads the file descriptor itself and waits with
        `trio.lowlevel.wait_readable`, as trio's socket does inside, but three coroutine frames
        shallower: an idle connection is parked here, and each frame of its stack is memory
        held for as long as the connection lives.
        """
        sock = self._sock
        try:
            if sock is None:
                data = bytes(await self._stream.receive_some(RECEIVE_CHUNK_BYTES))
            else:
                # Nothing received yet since the handshake: the client is waiting for its welcome,
                # so wait for its bytes first instead of meeting an empty socket.
                waited = not self._waited_for_first_bytes
                if waited:
                    self._waited_for_first_bytes = True
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                while True:
                    try:
                        data = os.read(sock.fileno(), RECEIVE_CHUNK_BYTES)
                        break
                    except BlockingIOError:
                        waited = True
                        await trio.lowlevel.wait_readable(sock)
                if not waited:  # a client that always has bytes waiting must not starve others
                    await trio.lowlevel.cancel_shielded_checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(str(exc) or type(exc).__name__) from None
        except OSError as exc:
            raise PeerGone(exc.strerror or type(exc).__name__) from None
        self.received_at = trio.current_time()
        return data

    async def wait_for_close_reply(self) -> None:
        """After our close frame: read (and drop) what arrives until the peer's close frame or
        end-of-stream, so that the caller closes TCP first, as RFC 6455 wants of a server.

        The caller bounds how long.
        """
        try:
            while True:
                await self.receive_message()
        except (ConnectionClosing, PeerGone):
            pass

    async def discard_until_eof(self) -> None:
        """Read and drop whatever still arrives until the peer closes (after our close frame).

        The caller bounds how long; a broken connection ends it too.
        """
        try:
            while await self._receive_some():
                pass
        except PeerGone:
            pass

    # --- writing -------------------------------------------------------------------------------

    def try_write(self, data: bytes, size: int) -> int:
        """Write what the socket takes now, without waiting; return how many bytes of `data`.

        `size` is `len(data)`, measured by the caller: the hub measures an event's frame once
        for all its clients (a `len` per client here was about 300 instructions of the 4,400
        a delivery costs: the byte count is an int object of its own past 256).

        What is owed (the held-back 101, or the rest of an earlier frame) goes first, in the
        same system call. 0: nothing of `data` was written (no plain socket, a write in flight,
        closed, what was owed did not all go, or the socket is full or broken: the sender's
        awaited write finds any error itself). When the socket took only part of `data`, the
        rest is owed and goes out before anything else. Never
        raises for I/O; the `connection.try_write` fault point, armed with `raise`, stands for
        a bug here and propagates to the caller (the hub closes this client with 1011).
        """
        if self._sock is None or self._in_flight or self.closed_for_writing or self.broken:
            return 0
        if self._defer_to.armed or (self._fault.armed and self._fault.hit_now()):
            return 0  # the sender's write carries it (`sender.write` armed, or a dropped write)
        if self._owed:
            return self._write_after_owed(data)
        try:
            written = os.write(self._fd, data)
        except OSError:
            return 0
        if written != size and written:
            self._owed = data[written:]
        return written

    def _write_after_owed(self, data: bytes) -> int:
        """`try_write` when something is owed: it goes first, in the same system call."""
        owed = self._owed
        try:
            written = os.write(self._fd, owed + data)
        except OSError:
            return 0
        if written < len(owed):  # not even what was owed went: `data` stays the caller's
            self._owed = owed[written:]
            return 0
        written -= len(owed)
        self._owed = data[written:] if 0 < written < len(data) else b""
        return written

    async def write(self, data: bytes) -> None:
        """Pay what is owed, then write `data`, waiting for the socket as long as it takes.

        Raises `PeerGone` when the socket is closed or broken; a write cut off part-way (an
        error or a cancellation) marks the connection `broken`: only an abort can follow.
        """
        if self.broken:
            raise PeerGone("the connection is broken")
        if self._owed:
            data, self._owed = self._owed + data, b""
        if not data:
            return
        self._in_flight = True
        try:
            sent = self._write_some(data)
            if sent < len(data):
                await self._stream.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.broken = True
            raise PeerGone(str(exc) or type(exc).__name__) from None
        except BaseException:
            self.broken = True
            raise
        finally:
            self._in_flight = False

    def _write_some(self, data: bytes) -> int:
        if self._sock is None:
            return 0
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.broken = True
            raise PeerGone(exc.strerror or type(exc).__name__) from None

    async def send_close(self, code: int, reason: str) -> None:
        """Write the close frame (after what is owed), then shut the write side of TCP.

        So the peer reads the code, then end-of-stream; the caller then reads what still
        arrives for a bounded time (`discard_until_eof`) and closes. Writes nothing when the
        connection is broken, already closed for writing, or `code` is 1006 (which records a
        peer that vanished and never goes on the wire).
        """
        if self.broken or self.closed_for_writing or code == CloseCode.ABNORMAL:
            return
        await self.write(close_frame(code, reason))
        self.closed_for_writing = True
        if isinstance(self._stream, trio.SocketStream):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket at once (what is unsent is lost)."""
        self._fd = -1  # before the descriptor is freed for reuse: see __init__
        await trio.aclose_forcefully(self._stream)
