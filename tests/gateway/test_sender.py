"""The hub's direct write and the sender share one writer, the connection: frames never interleave.

A frame the socket took only part of (a large one, here) must be finished before anything else
reaches the wire: a missed-events notice, a pong, a close frame. These tests write through a
real socket pair and parse what arrives with the tests' own frame reader.
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
from helpers import OPCODE_CLOSE, OPCODE_PONG, OPCODE_TEXT, parse_server_frames

from sigma.errors import PeerGone
from sigma.faults import FaultPoint
from sigma.gateway.sender import send_backlog
from sigma.hub.frames import PING_FRAME, Frame, build_frame
from sigma.hub.outbox import Outbox
from sigma.websocket.connection import ServerConnection
from sigma.websocket.frames import pong_frame

BIG = 256 * 1024  # far more than a socket pair buffers: the hub's write is always partial


def event(n: int, size: int = 10) -> bytes:
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)


def numbered(n: int, size: int = 10) -> Frame:
    return build_frame(event(n, size), "notification", event=True)


@dataclass
class Wire:
    """An outbox handed to a connection on one end of a socket pair; the other end reads."""

    outbox: Outbox
    connection: ServerConnection
    far: trio.socket.SocketType
    senders: list[int]

    async def read_all(self) -> list[tuple[int, bytes]]:
        """Everything that arrives until the wire has been quiet for a moment, as frames."""
        received = b""
        with trio.move_on_after(10):
            while True:
                with trio.move_on_after(0.2) as quiet:
                    chunk = await self.far.recv(1 << 20)
                    if not chunk:
                        break
                    received += chunk
                if quiet.cancelled_caught:
                    break
        frames, rest = parse_server_frames(received)
        assert not rest, "the wire ends inside a frame"
        return frames


@asynccontextmanager
async def wired(outbox: Outbox, preamble: bytes = b"") -> AsyncIterator[Wire]:
    """The outbox starts `send_backlog` as a session does; on exit it is closed and waited for."""
    near, far = trio.socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = ServerConnection(
        trio.SocketStream(near),
        preamble=preamble,
        max_message_bytes=1 << 16,
        on_ping=lambda _: None,
    )
    senders: list[int] = []
    with far:
        async with trio.open_nursery() as nursery:

            def start_sender() -> None:
                senders.append(1)
                nursery.start_soon(send_backlog, outbox, connection, FaultPoint("sender.write"))

            outbox.attach(start_sender, connection.try_write)
            yield Wire(outbox, connection, far, senders)
            outbox.close(1000, "done")
        await connection.aclose()


async def test_a_partial_direct_write_is_owed_and_finished_before_anything_else() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.put(numbered(1, BIG))
        outbox.flush()
        assert wire.connection.owes and len(outbox) == 0  # the rest is the connection's
        second = numbered(2).data
        assert wire.connection.try_write(second, len(second)) == 0  # nothing jumps the queue
        frames = await wire.read_all()
        assert [payload for _, payload in frames] == [event(1, BIG)]
        assert not wire.connection.owes and not outbox.sending  # the sender is gone again
        assert wire.senders == [1]


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"


async def read_bytes(far: trio.socket.SocketType, count: int) -> bytes:
    received = b""
    with trio.fail_after(10):
        while len(received) < count:
            chunk = await far.recv(1 << 20)
            assert chunk, "the wire closed early"
            received += chunk
    return received


async def test_the_held_back_101_leaves_with_the_first_frame_in_one_direct_write() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox, preamble=SWITCH) as wire:
        assert wire.connection.owes
        outbox.put(numbered(1))
        outbox.flush()
        assert not wire.connection.owes and len(outbox) == 0
        assert wire.senders == []  # no task was needed: one system call took both
        received = await read_bytes(wire.far, len(SWITCH) + len(numbered(1).data))
        assert received.startswith(SWITCH)
        frames, rest = parse_server_frames(received[len(SWITCH) :])
        assert [payload for _, payload in frames] == [event(1)] and not rest


async def test_the_held_back_101_goes_before_a_close_frame_when_nothing_else_was_sent() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox, preamble=SWITCH) as wire:
        outbox.close(1011, "internal error")
        received = await read_bytes(wire.far, len(SWITCH) + 2)
        assert received.startswith(SWITCH)
        received += await wire.far.recv(1 << 16)
        frames, _ = parse_server_frames(received[len(SWITCH) :])
        assert frames[0][0] == OPCODE_CLOSE


async def test_a_101_the_socket_takes_only_in_part_keeps_the_frame_queued_behind_it() -> None:
    outbox = Outbox(capacity=8)
    preamble = b"HTTP/1.1 101 Switching Protocols\r\nx-pad: " + b"p" * BIG + b"\r\n\r\n"
    async with wired(outbox, preamble=preamble) as wire:
        outbox.put(numbered(1))
        outbox.flush()
        assert wire.connection.owes  # the socket pair took only part of the 101 ...
        assert wire.senders == [1]  # ... so the frame stayed queued, for the sender
        received = await read_bytes(wire.far, len(preamble) + len(numbered(1).data))
        assert received.startswith(preamble)
        frames, rest = parse_server_frames(received[len(preamble) :])
        assert [payload for _, payload in frames] == [event(1)] and not rest


async def test_a_pong_waits_for_the_rest_of_the_frame() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.put(numbered(1, BIG))
        outbox.flush()
        outbox.put(Frame(pong_frame(b"p"), "pong"), "control")
        outbox.flush()
        frames = await wire.read_all()
        assert frames == [(OPCODE_TEXT, event(1, BIG)), (OPCODE_PONG, b"p")]


async def test_pings_go_ahead_of_waiting_events_but_after_the_rest_of_a_frame() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.put(numbered(1, BIG))
        outbox.flush()  # the socket took part of it: the rest is owed
        outbox.put(numbered(2))
        outbox.put(PING_FRAME, "control")
        outbox.flush()
        frames = await wire.read_all()
        assert [opcode for opcode, _ in frames] == [OPCODE_TEXT, 0x9, OPCODE_TEXT]
        assert frames[2][1] == event(2)


async def test_the_missed_events_notice_follows_the_rest_of_a_frame() -> None:
    outbox = Outbox(capacity=1, policy="drop_oldest")
    async with wired(outbox) as wire:
        outbox.put(numbered(1, BIG))
        outbox.flush()
        for n in (2, 3, 4):  # the queue holds one event: 2 and 3 go, never the owed rest of 1
            outbox.put(numbered(n))
        outbox.flush()
        frames = await wire.read_all()
    payloads = [orjson.loads(payload) for _, payload in frames]
    assert payloads[0]["n"] == 1
    assert payloads[1]["data"]["kind"] == "events_dropped"
    assert payloads[1]["data"]["dropped"] == 2
    assert payloads[2]["n"] == 4


async def test_a_close_keeps_the_rest_of_a_frame_then_sends_the_close_frame() -> None:
    outbox = Outbox(capacity=8)
    async with wired(outbox) as wire:
        outbox.put(numbered(1, BIG))
        outbox.flush()
        outbox.put(numbered(2))
        outbox.put(PING_FRAME, "control")
        outbox.close(4008, "slow consumer")  # event 2 and the ping go; the rest of 1 stays
        frames = await wire.read_all()
        assert frames == [(OPCODE_TEXT, event(1, BIG)), (OPCODE_CLOSE, b"\x0f\xa8slow consumer")]
        assert wire.connection.closed_for_writing and not wire.connection.broken
        third = numbered(3).data
        assert wire.connection.try_write(third, len(third)) == 0  # nothing after the close


async def test_a_cancelled_write_leaves_the_connection_broken_and_writes_no_close() -> None:
    near, far = trio.socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = ServerConnection(
        trio.SocketStream(near), max_message_bytes=1 << 16, on_ping=lambda _: None
    )
    with far:
        with trio.move_on_after(0.1):
            await connection.write(numbered(1, BIG).data)  # nobody reads: it never finishes
        assert connection.broken
        with pytest.raises(PeerGone):
            await connection.write(b"more")
        await connection.send_close(1001, "going away")  # writes nothing into a torn frame
        assert not connection.closed_for_writing
        assert connection.try_write(b"x", 1) == 0
        await connection.aclose()


async def test_without_a_plain_socket_everything_takes_the_senders_path() -> None:
    near, far = trio.testing.memory_stream_pair()  # as over TLS: no socket to write to
    outbox = Outbox(capacity=8)
    connection = ServerConnection(near, max_message_bytes=1 << 16, on_ping=lambda _: None)
    assert not connection.can_write_directly and connection.try_write(b"x", 1) == 0
    received = b""
    async with trio.open_nursery() as nursery:
        outbox.attach(
            lambda: nursery.start_soon(send_backlog, outbox, connection, FaultPoint("sender.write"))
        )
        outbox.put(numbered(1))
        outbox.put(numbered(2))
        outbox.flush()
        while len(parse_server_frames(received)[0]) < 2:
            received += await far.receive_some()
    frames, rest = parse_server_frames(received)
    assert [payload for _, payload in frames] == [event(1), event(2)] and not rest


async def test_after_aclose_no_write_reaches_the_descriptor_another_connection_was_given() -> None:
    """The connection keeps its socket's descriptor number for its writes; once it is closed,
    the kernel hands that number to the next socket, and a late write (the hub's, for a client
    it has not dropped yet) must fail as on a closed socket instead of reaching the newcomer."""
    near, far = trio.socket.socketpair()
    connection = ServerConnection(
        trio.SocketStream(near), max_message_bytes=1 << 16, on_ping=lambda _: None
    )
    frame = numbered(1).data
    assert connection.try_write(frame, len(frame)) == len(frame)  # open: written at once
    old_number = near.fileno()
    await connection.aclose()
    newcomer, newcomers_peer = socket.socketpair()
    with far, newcomer, newcomers_peer:
        assert old_number in (newcomer.fileno(), newcomers_peer.fileno())  # the number reused
        assert connection.try_write(frame, len(frame)) == 0
        with pytest.raises(PeerGone):
            await connection.write(frame)
        for end in (newcomer, newcomers_peer):
            end.setblocking(False)
            with pytest.raises(BlockingIOError):
                end.recv(1 << 16)  # nothing arrived on either end of the newcomer
