"""`POST /api/publish` on one keep-alive connection, from a bare socket: requests that arrive
together (pipelined) are each answered in order, a response head built once and sent again
carries only what belongs to its own request, and a refused body still closes the connection."""

from __future__ import annotations

import orjson
import trio
from helpers import API_KEY, running_stack
from test_http_hostile import RawReader


def publish_request(body: bytes) -> bytes:
    """One keep-alive publish request with `body`."""
    return (
        b"POST /api/publish HTTP/1.1\r\nhost: x\r\n"
        b"authorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def event(n: int) -> bytes:
    return orjson.dumps({"type": "notification", "data": {"n": n}})


async def test_pipelined_publishes_are_answered_in_order_on_one_connection() -> None:
    async with running_stack() as stack:
        stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        async with stream:
            reader = RawReader(stream)
            # Three requests in one write: the second and third are already buffered when the
            # first is answered, so they are parsed without waiting for the socket.
            await stream.send_all(b"".join(publish_request(event(n)) for n in range(3)))
            with trio.fail_after(5):
                answers = [await reader.response() for _ in range(3)]
            assert [status for status, _, _ in answers] == [200, 200, 200]
            assert [orjson.loads(body) for _, _, body in answers] == [
                {"seq": 1},
                {"seq": 2},
                {"seq": 3},
            ]
            assert all(b"connection" not in headers for _, headers, _ in answers)
            # One more on the same connection, after a pause: the wait for a head is a real one.
            await trio.sleep(0.05)
            await stream.send_all(publish_request(event(3)))
            with trio.fail_after(5):
                status, headers, body = await reader.response()
            assert (status, orjson.loads(body)) == (200, {"seq": 4})
            assert b"connection" not in headers


async def test_a_refused_body_closes_only_its_own_connection() -> None:
    async with running_stack() as stack:
        limit = stack.config.gateway.max_http_body_bytes
        too_big = b"POST /api/publish HTTP/1.1\r\nhost: x\r\n" + (
            b"authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"content-length: " + str(limit + 1).encode() + b"\r\n\r\n"
        )
        for _ in range(2):  # the same answer twice: its head is built once, sent twice
            refused = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
            async with refused:
                await refused.send_all(too_big)
                with trio.fail_after(5):
                    status, headers, body = await RawReader(refused).response()
                assert status == 413
                assert orjson.loads(body)["error"] == "body_too_large"
                assert headers[b"connection"] == b"close"
        kept = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        async with kept:
            reader = RawReader(kept)
            for n in range(2):
                await kept.send_all(publish_request(event(n)))
                with trio.fail_after(5):
                    status, headers, body = await reader.response()
                assert (status, orjson.loads(body)) == (200, {"seq": n + 1})
                assert b"connection" not in headers  # the 413's close is not carried over
