"""The per-client sender: drains one client's `Outbox` onto its WebSocket, many frames per write.

Reads: the client's `Outbox` (`receive_batch`). Writes: the client's socket.
Exits: normally when the outbox is closed (`OutboxClosed`); with `ClientGone` when the socket
broke.

Frames arrive already encoded by the hub (server frames are unmasked and uncompressed, so their
bytes are the same for every client). A batch is joined and written under trio-websocket's
per-connection stream lock, so writes never interleave with the library's own pongs and close
frames: first with one non-blocking system call, then, for what the socket did not take, with an
awaited `send_all`. `direct_writer` gives the hub the same non-blocking write for an idle
sender. This is the one place that reaches into trio-websocket's internals: it offers no public
way to write prepared frames, and one `send_message` await per frame costs several times the
throughput.

Fault point `sender.write` (`sigma.faults`) is passed before each batch is written: `raise`
crashes the session (its client gets 1011), `drop` cuts the connection as if the client had
vanished (`ClientGone`).
"""

from __future__ import annotations

import os

import trio
from trio_websocket import WebSocketConnection

from sigma.actors.hub_state import reply_frame
from sigma.actors.outbox import DirectWriter, Frame, Outbox, OutboxClosed
from sigma.faults import FaultPoint
from sigma.protocol import missed_events_notice


class ClientGone(Exception):
    """The client's socket broke or was closed under us: it is the client's side that left."""


async def write_frames(ws: WebSocketConnection, data: bytes) -> None:
    """Write prepared frame bytes to the connection's socket, under its stream lock.

    When nobody else holds the lock, the bytes go straight to the socket with one non-blocking
    system call and no trip through trio's scheduler; only what the socket cannot take at once
    is left to an awaited `send_all`. Raises `ClientGone` when the socket is closed or broken.
    """
    if ws.closed is not None:
        raise ClientGone(f"connection already closed ({ws.closed.code})")
    lock = ws._stream_lock
    try:
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            async with lock:
                await ws._stream.send_all(data)
            return
        try:
            sent = _write_now(ws._stream, data)
            if sent < len(data):
                await ws._stream.send_all(memoryview(data)[sent:])
        finally:
            lock.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ClientGone(str(exc) or type(exc).__name__) from None


def direct_writer(ws: WebSocketConnection, fault: FaultPoint | None) -> DirectWriter | None:
    """The hub's shortcut (`Outbox.flush`) for an idle sender: write without waiting.

    Returns a function that writes what the socket takes at once and says how many bytes went
    out, or None when the connection is not over a socket. The function never raises: 0 means
    "leave it to the sender", which also finds any error itself. It writes nothing while the
    connection's stream lock is held (trio-websocket or the sender is mid-write: checking is
    enough, as nothing can take the lock between the check and this synchronous write) or while
    `sender.write` is armed, so that every write then passes the fault point.
    """
    transport = getattr(ws._stream, "inner", ws._stream)
    if not isinstance(transport, trio.SocketStream):
        return None
    sock = transport.socket  # its fileno() is asked each time: -1 once closed, never reused
    lock = ws._stream_lock

    def write(data: bytes) -> int:
        if lock.locked() or ws.closed is not None or (fault is not None and fault.armed):
            return 0
        try:
            return os.write(sock.fileno(), data)
        except OSError:
            return 0

    return write


def _write_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write what the socket takes without blocking; 0 when it is not a socket or is full."""
    transport = getattr(stream, "inner", stream)
    if not isinstance(transport, trio.SocketStream):
        return 0
    try:
        return os.write(transport.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise ClientGone(exc.strerror or type(exc).__name__) from None


class Sender:
    """Sends everything the hub queues for one client until the outbox is closed.

    `fault` is the `sender.write` fault point (see the module docstring).
    """

    __slots__ = ("_fault", "_outbox", "_ws", "torn")

    def __init__(
        self, ws: WebSocketConnection, outbox: Outbox, fault: FaultPoint | None = None
    ) -> None:
        self._ws = ws
        self._outbox = outbox
        self._fault = fault or FaultPoint("sender.write")
        self.torn = False
        """A write was cut off part-way (cancelled): the connection's framing is lost."""

    async def run(self) -> None:
        """Write each batch the outbox hands over, until it is closed.

        Error handling: returns when the outbox is closed; raises `ClientGone` when the socket
        breaks. Cancellation may stop it in the middle of a write, which leaves `torn` set: the
        caller must then abort the stream rather than send a close frame.
        """
        receive_batch = self._outbox.receive_batch
        while True:
            try:
                # No local names the batch: it must not stay alive while the sender waits.
                await self._write_batch(await receive_batch())
            except OutboxClosed:
                return

    async def _write_batch(self, batch: list[Frame]) -> None:
        dropped = self._outbox.take_dropped()
        chunks = [frame.data for frame in batch]
        if dropped:
            chunks.insert(0, reply_frame(missed_events_notice(dropped)).data)
        if self._fault.armed and await self._fault.hit():
            raise ClientGone("fault injected at sender.write: connection cut")
        self.torn = True
        await write_frames(self._ws, b"".join(chunks))
        self.torn = False
