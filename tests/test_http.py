"""`sigma.http.HttpServerConnection` on its own: the heads' timeout under `serving()`, whose one
cancel scope a `HeadWatch` cancels once a head is overdue (and never while a request is
handled)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from sigma.http.connection import HttpServerConnection
from sigma.http.head_watch import HeadWatch
from sigma.http.request import TimedOut

REQUEST = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
GRANULARITY_S = 0.5


@pytest.fixture
async def watch() -> AsyncIterator[HeadWatch]:
    head_watch = HeadWatch(GRANULARITY_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(head_watch.run)
        yield head_watch
        nursery.cancel_scope.cancel()


async def test_a_head_that_does_not_come_times_out_under_serving(
    autojump_clock: trio.testing.MockClock, watch: HeadWatch
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)
    started = trio.current_time()
    with conn.serving(watch):
        await client.send_all(b"GET /health HTTP/1.1\r\n")  # never a whole head
        with pytest.raises(TimedOut):
            await conn.next_request(5.0)
    # Timed out by the watch's sweep: on time, or at most one sweep's interval late.
    assert 5.0 <= trio.current_time() - started <= 5.0 + GRANULARITY_S


async def test_the_watch_times_out_each_head_at_most_its_granularity_late(
    autojump_clock: trio.testing.MockClock, watch: HeadWatch
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)
    with conn.serving(watch):
        await trio.sleep(0.3)  # out of step with the sweeps
        await client.send_all(REQUEST)
        assert await conn.next_request(5.0) is not None
        await conn.read_body()
        await conn.respond_json(200, {"ok": True})
        await trio.sleep(1.1)
        started = trio.current_time()
        with pytest.raises(TimedOut):
            await conn.next_request(2.0)
        assert 2.0 <= trio.current_time() - started <= 2.0 + GRANULARITY_S


async def test_a_head_that_comes_in_time_is_served_under_the_watch(
    autojump_clock: trio.testing.MockClock, watch: HeadWatch
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)

    async def send_late() -> None:
        await trio.sleep(4.9)
        await client.send_all(REQUEST)

    with conn.serving(watch):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_late)
            request = await conn.next_request(5.0)
        assert request is not None and request.path == "/health"


async def test_handling_a_request_under_serving_has_no_deadline(
    autojump_clock: trio.testing.MockClock, watch: HeadWatch
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)
    with conn.serving(watch):
        for _ in range(2):  # the second head gets a deadline of its own again
            await client.send_all(REQUEST)
            request = await conn.next_request(5.0)
            assert request is not None and request.path == "/health"
            await conn.read_body()
            await trio.sleep(60)  # far past the head's timeout: not cancelled
            await conn.respond_json(200, {"ok": True})
        with pytest.raises(TimedOut):
            await conn.next_request(5.0)


async def test_the_watch_sleeps_while_no_connection_is_served(
    autojump_clock: trio.testing.MockClock, watch: HeadWatch
) -> None:
    for _ in range(2):  # a connection served after a quiet spell wakes the watch up again
        await trio.sleep(100)  # nothing to sweep: the watch waits for a connection
        _client, server = trio.testing.memory_stream_pair()
        conn = HttpServerConnection(server, max_body_bytes=1024)
        started = trio.current_time()
        with conn.serving(watch), pytest.raises(TimedOut):
            await conn.next_request(1.0)
        assert 1.0 <= trio.current_time() - started <= 1.0 + GRANULARITY_S
