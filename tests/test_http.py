"""`sigma.http.HttpServerConnection` on its own: the heads' timeout under `serving()`, whose one
cancel scope has a deadline only while a head is awaited."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sigma.http import HttpServerConnection, TimedOut

REQUEST = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"


async def test_a_head_that_does_not_come_times_out_under_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)
    started = trio.current_time()
    with conn.serving():
        await client.send_all(b"GET /health HTTP/1.1\r\n")  # never a whole head
        with pytest.raises(TimedOut):
            await conn.next_request(5.0)
    assert trio.current_time() - started == pytest.approx(5.0)


async def test_handling_a_request_under_serving_has_no_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpServerConnection(server, max_body_bytes=1024)
    with conn.serving():
        for _ in range(2):  # the second head gets a deadline of its own again
            await client.send_all(REQUEST)
            request = await conn.next_request(5.0)
            assert request is not None and request.path == "/health"
            await conn.read_body()
            await trio.sleep(60)  # far past the head's timeout: not cancelled
            await conn.respond_json(200, {"ok": True})
        with pytest.raises(TimedOut):
            await conn.next_request(5.0)
