"""The sender and the hub's direct write share one socket: frames never interleave.

A frame the socket took only part of (a large one, here) must be finished before anything else
reaches the wire: a missed-events notice, trio-websocket's pongs and close frames, a close.
These tests write through a real socket pair and parse what arrives.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
import pytest
import trio
import trio.testing
from wsproto.frame_protocol import FrameDecoder, FrameProtocol, Opcode

from sigma.gateway.sender import Sender, StreamLock
from sigma.hub.frames import PING_FRAME, Frame, build_frame
from sigma.hub.outbox import Outbox

BIG = 256 * 1024  # far more than a socket pair buffers: the hub's write is always partial
_frames = FrameProtocol(client=False, extensions=[])


@dataclass
class FakeConnection:
    """What `Sender` reads of a trio-websocket connection."""

    _stream: trio.SocketStream
    closed: object = None


def event(n: int, size: int = 10) -> bytes:
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)


@dataclass
class Wire:
    """A sender on one end of a socket pair, attached to an outbox; the other end reads."""

    sender: Sender
    lock: StreamLock
    far: trio.socket.SocketType

    async def read_all(self) -> list[tuple[Opcode, bytes]]:
        """Everything that arrives until the wire has been quiet for a moment, as frames."""
        received = b""
        with trio.move_on_after(10):
            while True:
                with trio.move_on_after(0.2) as quiet:
                    received += await self.far.recv(1 << 20)
                if quiet.cancelled_caught:
                    break
        return parse(received)


@asynccontextmanager
async def wired(outbox: Outbox) -> AsyncIterator[Wire]:
    """The sender runs throughout; on exit the outbox is closed and the sender waited for."""
    near, far = trio.socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    lock = StreamLock()
    sender = Sender(FakeConnection(trio.SocketStream(near)), outbox, lock)  # type: ignore[arg-type]
    outbox.attach_direct_writer(sender.write_now)
    with near, far:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            await trio.testing.wait_all_tasks_blocked()
            yield Wire(sender, lock, far)
            outbox.close(1000, "done")


def parse(data: bytes) -> list[tuple[Opcode, bytes]]:
    decoder = FrameDecoder(client=True, extensions=[])
    decoder.receive_bytes(data)
    frames = []
    while (frame := decoder.process_buffer()) is not None:
        payload = frame.payload
        frames.append((frame.opcode, payload.encode() if isinstance(payload, str) else payload))
    assert not decoder.buffer, "the wire ends inside a frame"
    return frames


def numbered(n: int, size: int = 10) -> Frame:
    return build_frame(event(n, size), "notification", event=True)


async def test_a_partial_direct_write_holds_the_stream_until_the_sender_finishes_it() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.deliver_now(numbered(1, BIG), [])
        assert wire.lock.locked() and wire.sender.mid_frame  # the rest is owed
        assert wire.sender.write_now(numbered(2).data) == 0
        frames = await wire.read_all()
        assert [payload for _, payload in frames] == [event(1, BIG)]
        assert not wire.lock.locked() and not wire.sender.mid_frame


async def test_a_pong_waits_for_the_rest_of_the_frame() -> None:
    outbox = Outbox(capacity=8)
    pong = bytes(_frames.pong(b"p"))
    async with wired(outbox) as wire, trio.open_nursery() as nursery:
        outbox.deliver_now(numbered(1, BIG), [])

        async def pong_like_trio_websocket() -> None:
            async with wire.lock:  # what trio-websocket's `_send` does
                await wire.sender._ws._stream.send_all(pong)

        nursery.start_soon(pong_like_trio_websocket)
        frames = await wire.read_all()
        assert [opcode for opcode, _ in frames] == [Opcode.TEXT, Opcode.PONG]


async def test_the_missed_events_notice_follows_the_rest_of_a_frame() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    async with wired(outbox) as wire:
        outbox.deliver_now(numbered(1, BIG), [])
        for n in (2, 3, 4):  # the queue holds the rest of 1 and one event: 2 and 3 go
            outbox.send_nowait(numbered(n))
        frames = await wire.read_all()
    payloads = [orjson.loads(payload) for _, payload in frames]
    assert payloads[0]["n"] == 1
    assert payloads[1]["data"]["kind"] == "events_dropped"
    assert payloads[1]["data"]["dropped"] == 2
    assert payloads[2]["n"] == 4


async def test_a_close_keeps_the_rest_of_a_frame_for_the_sender() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.deliver_now(numbered(1, BIG), [])
        outbox.send_nowait(numbered(2))
        outbox.send_first(PING_FRAME)
        outbox.close(4008, "slow consumer")  # event 2 and the ping go; the rest of 1 stays
        frames = await wire.read_all()
        assert [payload for _, payload in frames] == [event(1, BIG)]
        assert not wire.sender.mid_frame and not wire.lock.locked()


async def test_the_rest_of_a_frame_goes_out_even_once_the_client_started_closing() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.deliver_now(numbered(1, BIG), [])
        wire.sender._ws.closed = "the client's close frame arrived"  # type: ignore[attr-defined]
        frames = await wire.read_all()
        assert [payload for _, payload in frames] == [event(1, BIG)]


async def test_a_write_of_trio_websockets_that_failed_counts_as_mid_frame() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        assert not wire.sender.mid_frame
        with pytest.raises(trio.BrokenResourceError):
            async with wire.lock:  # what trio-websocket's `_send` does; its write fails
                raise trio.BrokenResourceError
        assert wire.sender.mid_frame and not wire.lock.locked()
