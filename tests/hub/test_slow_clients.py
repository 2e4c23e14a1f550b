"""One slow client never holds back the others, and leaves nothing behind when cut off."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from helpers import (
    OPCODE_CLOSE,
    Stack,
    decode_wire,
    eventually,
    make_config,
    parse_server_frames,
    running_stack,
)
from reliability import count_tasks
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from sigma.config import HeartbeatConfig, HubConfig
from sigma.gateway.server import CLOSE_TIMEOUT_S

EVENT_PAD = "x" * 1500


async def settled_task_count(stack: Stack) -> int:
    """Tasks once everything is idle, with the publisher's keep-alive connection open."""
    assert (await stack.http.get("/health")).status_code == 200
    await trio.testing.wait_all_tasks_blocked()
    return count_tasks()


def active_sessions(stack: Stack) -> int:
    return stack.sessions.count_children().active


async def open_stalled_client(port: int) -> trio.SocketStream:
    """A WebSocket client with a tiny receive buffer that sends its handshake, then never reads."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target="/ws")))
    return stream


async def read_events(
    stack: Stack,
    count: int,
    results: dict[int, list[int]],
    index: int,
    ready: trio.MemorySendChannel[None],
) -> None:
    async with open_websocket_url(stack.ws_url) as ws:
        await ws.get_message()
        await ready.send(None)
        seqs = results.setdefault(index, [])
        while len(seqs) < count:
            seqs.append(orjson.loads(await ws.get_message())["seq"])


async def publish(stack: Stack, total: int, batch: int = 50) -> None:
    for _ in range(0, total, batch):
        await stack.publish([{"type": "notification", "data": {"pad": EVENT_PAD}}] * batch)


async def test_hundred_clients_keep_full_rate_while_a_stalled_one_is_cut_off() -> None:
    clients, events = 100, 600
    async with running_stack() as stack:
        idle_tasks = await settled_task_count(stack)
        results: dict[int, list[int]] = {}
        ready_send, ready_receive = trio.open_memory_channel[None](clients)
        async with trio.open_nursery() as readers:
            for index in range(clients):
                readers.start_soon(read_events, stack, events, results, index, ready_send)
            for _ in range(clients):
                await ready_receive.receive()
            stalled = await open_stalled_client(stack.gateway.port)
            await eventually(lambda: active_sessions(stack) == clients + 1)
            for published in range(50, events + 1, 50):
                await publish(stack, 50)
                # The healthy clients keep pace, whatever the stalled one does.
                await eventually(lambda n=published: min(len(s) for s in results.values()) >= n)
        assert all(results[i] == list(range(1, events + 1)) for i in range(clients))
        await eventually(lambda: active_sessions(stack) == 0, timeout_s=5)
        await trio.testing.wait_all_tasks_blocked()
        assert stack.hub.state.slow_disconnects == 1
        assert stack.hub.state.clients == {}
        # Nothing of any session, the stalled one included, remains.
        assert await settled_task_count(stack) == idle_tasks
        await stalled.aclose()


async def keep_reading(stack: Stack, task_status: trio.TaskStatus[None]) -> None:
    """A client that keeps up: reads every frame until cancelled."""
    async with open_websocket_url(stack.ws_url) as ws:
        await ws.get_message()
        task_status.started()
        while True:
            await ws.get_message()


async def test_stalled_client_blocked_in_a_write_is_aborted_within_a_second() -> None:
    config = make_config(hub=HubConfig(queue_size=8))
    async with running_stack(config) as stack:
        idle_tasks = await settled_task_count(stack)
        async with trio.open_nursery() as reader:
            await reader.start(keep_reading, stack)  # the rest, which the stalled one lags behind
            stalled = await open_stalled_client(stack.gateway.port)
            await eventually(lambda: active_sessions(stack) == 2, timeout_s=5)
            await publish(stack, 400)
            cut_at = trio.current_time()
            await eventually(lambda: active_sessions(stack) == 1, timeout_s=5)
            assert trio.current_time() - cut_at < 1.5
            assert stack.hub.state.slow_disconnects == 1
            reader.cancel_scope.cancel()
        await eventually(lambda: active_sessions(stack) == 0, timeout_s=5)
        assert await settled_task_count(stack) == idle_tasks
        await stalled.aclose()


async def test_a_session_stopped_mid_write_is_aborted_at_once_without_a_close_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(hub=HubConfig(queue_size=10_000))  # never cut off as a slow consumer
    async with running_stack(config) as stack:
        idle_tasks = await settled_task_count(stack)
        stalled = await open_stalled_client(stack.gateway.port)
        await eventually(lambda: active_sessions(stack) == 1, timeout_s=5)
        await publish(stack, 400)  # ~600 KB: far more than the socket takes, so a write waits
        [session] = stack.sessions.which_children()
        stopped_at = trio.current_time()
        await stack.sessions.terminate_child(session.id)
        # Aborted, not waiting out the close timeout for a close frame that cannot be sent.
        assert trio.current_time() - stopped_at < CLOSE_TIMEOUT_S / 2
        assert await settled_task_count(stack) == idle_tasks
        received = b""
        with trio.move_on_after(5):
            while chunk := await stalled.receive_some(65536):
                received += chunk
        frames, _cut = parse_server_frames(received[received.index(b"\r\n\r\n") + 4 :])
        opcodes = [opcode for opcode, _ in frames]
        assert opcodes and OPCODE_CLOSE not in opcodes  # cut off mid-frame: no close frame
        await stalled.aclose()


async def test_a_session_stopped_between_writes_closes_with_1001() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await ws.get_message()  # the welcome
        [session] = stack.sessions.which_children()
        await stack.sessions.terminate_child(session.id)
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
            await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1001,
            "server shutting down",
        )
        assert stack.hub.state.clients == {}


def decode_all(data: bytes) -> list[dict[str, Any]]:
    return decode_wire(data)


async def test_drop_oldest_tells_the_client_how_many_it_missed() -> None:
    config = make_config(hub=HubConfig(queue_size=4, slow_client_policy="drop_oldest"))
    async with running_stack(config) as stack:
        stream = await open_stalled_client(stack.gateway.port)
        await eventually(lambda: active_sessions(stack) == 1, timeout_s=5)
        await publish(stack, 400)
        received = b""
        with trio.move_on_after(2):
            while True:
                received += await stream.receive_some(65536)
        body = received[received.index(b"\r\n\r\n") + 4 :]
        messages = decode_all(body)
        notices = [m for m in messages if m["data"].get("kind") == "events_dropped"]
        seqs = [m["seq"] for m in messages if m["seq"] is not None]
        missed = sum(n["data"]["dropped"] for n in notices)
        assert notices and missed + len(seqs) == 400
        assert seqs == sorted(seqs) and seqs[-1] == 400
        assert stack.sessions.count_children().active == 1
        scrape = (await stack.http.get("/metrics")).text
        assert f'sigma_events_dropped_total{{reason="drop_oldest"}} {missed:.1f}' in scrape
        await stream.aclose()


async def test_a_client_that_never_answers_pings_is_closed_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(heartbeat=HeartbeatConfig(ping_interval_s=5.0, ping_timeout_s=2.0))
    async with running_stack(config) as stack:
        idle_tasks = await settled_task_count(stack)
        silent = await open_stalled_client(stack.gateway.port)  # never reads, never pongs
        await eventually(lambda: active_sessions(stack) == 1)
        joined_at = trio.current_time()
        await eventually(lambda: active_sessions(stack) == 0, timeout_s=30)
        closed_after = trio.current_time() - joined_at
        assert 5.0 + 2.0 <= closed_after <= 5.0 + 2.0 + 1.5  # ping, timeout, close deadline
        assert await settled_task_count(stack) == idle_tasks
        await silent.aclose()
