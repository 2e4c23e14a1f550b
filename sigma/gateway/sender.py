"""The per-client sender: drains one client's `Outbox` onto its WebSocket, many frames per write.

Reads: the client's `Outbox` (`receive_batch`). Writes: the client's socket.
Exits: normally when the outbox is closed (`OutboxClosed`); with `ClientGone` when the socket
broke.

Frames arrive already encoded by the hub (server frames are unmasked and uncompressed, so their
bytes are the same for every client). A batch is joined and written under the connection's
stream lock, so writes never interleave with trio-websocket's own pongs and close frames: first
with one non-blocking system call, then, for what the socket did not take, with an awaited
`send_all`. `Sender.write_now` gives the hub the same non-blocking write while the sender is
idle.

When the socket takes only part of a frame from the hub, the rest must follow before anything
else is written. The hub then takes the stream lock, and the sender releases it once it has
written the rest. trio's locks belong to the task that took them, so `take_over_stream_lock`
swaps trio-websocket's lock for a `StreamLock` that no task owns.

This is the one place that reaches into trio-websocket's internals (`_stream`, `_stream_lock`):
it offers no public way to write prepared frames, and one `send_message` await per frame costs
several times the throughput.

Fault point `sender.write` (`sigma.faults`) is passed before each batch is written: `raise`
crashes the session (its client gets 1011), `drop` cuts the connection as if the client had
vanished (`ClientGone`).
"""

from __future__ import annotations

import os

import trio
from trio_websocket import WebSocketConnection

from sigma.faults import FaultPoint
from sigma.hub.frames import Frame, reply_frame
from sigma.hub.outbox import PARTIAL_FRAME, Outbox, OutboxClosed
from sigma.protocol import missed_events_notice


class ClientGone(Exception):
    """The client's socket broke or was closed under us: it is the client's side that left."""


class StreamLock:
    """The connection's write lock, held by whoever writes; unlike trio's locks, no task owns it.

    So the hub can take it when it leaves a frame half-written, and the sender release it once
    the frame is complete. It has what trio-websocket uses of a lock (`async with`), and notes
    when a write made under `async with` ended in an error or a cancellation (`cut`): such a
    write, a pong or a close reply of trio-websocket's, may have stopped inside its frame.
    """

    __slots__ = ("_semaphore", "cut")

    def __init__(self) -> None:
        self._semaphore = trio.Semaphore(1, max_value=1)
        self.cut = False

    def locked(self) -> bool:
        """Whether somebody is writing (or owes the rest of a frame)."""
        return self._semaphore.value == 0

    def acquire_nowait(self) -> None:
        """Take the lock now; raises `trio.WouldBlock` when it is held."""
        self._semaphore.acquire_nowait()

    async def acquire(self) -> None:
        """Wait for the lock and take it (first come, first served)."""
        await self._semaphore.acquire()

    def release(self) -> None:
        """Give the lock back."""
        self._semaphore.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            self.cut = True
        self.release()


async def take_over_stream_lock(ws: WebSocketConnection) -> StreamLock:
    """Give `ws` a `StreamLock` in place of its own lock, once nobody holds or waits for that.

    The swap itself does not wait, so no writer can start between the check and the swap; a
    writer queued on the old lock would write beside the new one's holder, hence the wait.
    """
    while ws._stream_lock.locked():
        async with ws._stream_lock:
            pass
    lock = StreamLock()
    ws._stream_lock = lock  # type: ignore[assignment]
    return lock


class Sender:
    """Sends everything the hub queues for one client until the outbox is closed.

    `lock` is the connection's `StreamLock` (`take_over_stream_lock`); `fault` is the
    `sender.write` fault point (see the module docstring).
    """

    __slots__ = ("_fault", "_holding", "_lock", "_outbox", "_sock", "_ws", "torn")

    def __init__(
        self,
        ws: WebSocketConnection,
        outbox: Outbox,
        lock: StreamLock,
        fault: FaultPoint | None = None,
    ) -> None:
        self._ws = ws
        self._outbox = outbox
        self._lock = lock
        self._fault = fault or FaultPoint("sender.write")
        transport = getattr(ws._stream, "inner", ws._stream)
        # Its fileno() is asked at each write: -1 once closed, never another connection's.
        self._sock = transport.socket if isinstance(transport, trio.SocketStream) else None
        self._holding = False
        """The sender holds the stream lock: it took it to write, or the hub took it and left
        it the rest of a frame to write."""
        self.torn = False
        """A write was cut off part-way (cancelled): the connection's framing is lost."""

    @property
    def can_write_now(self) -> bool:
        """Whether `write_now` can write at all (the connection is over a socket)."""
        return self._sock is not None

    @property
    def mid_frame(self) -> bool:
        """Whether the stream may have stopped inside a frame, ours or trio-websocket's:
        nothing but an abort can follow."""
        return self.torn or self._holding or self._lock.cut

    def write_now(self, data: bytes) -> int:
        """The hub's write (`Outbox.flush`, `deliver_now`) while the sender is idle.

        Writes what the socket takes at once and returns how many bytes; never raises (0:
        "leave it to the sender", which also finds any error itself). Writes nothing while the
        stream lock is held or while `sender.write` is armed, so that every write then passes
        the fault point. When only part of `data` went out, it takes the stream lock, which the
        sender gives back after writing the rest.
        """
        sock = self._sock
        if sock is None or self._lock.locked() or self._ws.closed is not None or self._fault.armed:
            return 0
        try:
            written = os.write(sock.fileno(), data)
        except OSError:
            return 0
        if 0 < written < len(data):
            self._lock.acquire_nowait()
            self._holding = True
        return written

    async def run(self) -> None:
        """Write each batch the outbox hands over, until it is closed.

        Error handling: returns when the outbox is closed; raises `ClientGone` when the socket
        breaks. Cancellation may stop it in the middle of a write (`mid_frame`), after which
        the caller must abort the stream rather than send a close frame.
        """
        receive_batch = self._outbox.receive_batch
        while True:
            try:
                # No local names the batch: it must not stay alive while the sender waits.
                await self._write_batch(await receive_batch())
            except OutboxClosed:
                return

    async def _write_batch(self, batch: list[Frame]) -> None:
        chunks = [frame.data for frame in batch]
        dropped = self._outbox.take_dropped()
        if dropped:
            notice = reply_frame(missed_events_notice(dropped)).data
            chunks.insert(1 if batch[0].event_type == PARTIAL_FRAME else 0, notice)
        if self._fault.armed and await self._fault.hit():
            raise ClientGone("fault injected at sender.write: connection cut")
        await self.write(b"".join(chunks))

    async def write(self, data: bytes) -> None:
        """Write prepared frame bytes under the stream lock (or the rest of a frame the hub
        began, whose lock it already took).

        When nobody else holds the lock, the bytes go straight to the socket with one
        non-blocking system call and no trip through trio's scheduler; only what the socket
        cannot take at once is left to an awaited `send_all`. Raises `ClientGone` when the
        socket is closed or broken.
        """
        ws = self._ws
        if not self._holding:
            # Checked only here: the rest of a frame the hub began goes out even to a client
            # that is closing (a dead socket shows as an error below).
            if ws.closed is not None:
                raise ClientGone(f"connection already closed ({ws.closed.code})")
            try:
                self._lock.acquire_nowait()
            except trio.WouldBlock:
                await self._lock.acquire()
            self._holding = True
        self.torn = True
        try:
            sent = self._write_some(data)
            if sent < len(data):
                await ws._stream.send_all(memoryview(data)[sent:])
            self.torn = False
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone(str(exc) or type(exc).__name__) from None
        finally:
            if not self.torn:
                self._holding = False
                self._lock.release()

    def _write_some(self, data: bytes) -> int:
        """Write what the socket takes without blocking; 0 when it is not a socket or is full."""
        if self._sock is None:
            return 0
        try:
            return os.write(self._sock.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientGone(exc.strerror or type(exc).__name__) from None
