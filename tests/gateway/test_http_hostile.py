"""Hostile bytes at the listening socket: malformed HTTP, bad handshakes, slowloris, bad frames.

Every case is answered with a 4xx JSON error or closed in time, never a crash, and a normal
client connects afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
import trio
import trio.testing
from helpers import Stack, make_config, running_stack
from trio_websocket import open_websocket_url

from sigma.config import GatewayConfig
from sigma.log import configure_logging

WS_HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.fixture(autouse=True)
def no_crash_in_the_logs() -> Iterator[None]:
    """Whatever a test throws at the server, nothing is logged as an error or a traceback."""
    previous = structlog.get_config()
    output = io.StringIO()
    configure_logging("info", "console", stream=output)
    try:
        yield
    finally:
        structlog.configure(**previous)
    text = output.getvalue()
    assert " ERR " not in text and "Traceback" not in text, text


async def assert_still_serving(stack: Stack) -> None:
    async with open_websocket_url(stack.ws_url) as ws:
        with trio.fail_after(5):
            assert orjson.loads(await ws.get_message())["data"]["kind"] == "welcome"
    assert (await stack.http.get("/health")).status_code == 200


class RawReader:
    """Reads a server's bytes by hand: one HTTP response, then WebSocket frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def fill(self, size: int) -> bool:
        """Buffer at least `size` bytes; False if the server closed first."""
        while len(self.buffer) < size:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def take(self, size: int) -> bytes:
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    async def response(self) -> tuple[int | None, dict[bytes, bytes], bytes]:
        """One HTTP response: (status, headers, body), or (None, {}, b"") if closed without one."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self.fill(len(self.buffer) + 1):
                return None, {}, b""
        head = self.take(self.buffer.index(b"\r\n\r\n") + 4)
        status_line, *header_lines = head.strip().split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        assert await self.fill(length), "closed inside the body"
        return int(status_line.split()[1]), headers, self.take(length)

    async def close_code(self) -> int | None:
        """Read frames until a close frame: its code, or None if the socket just closed."""
        while True:
            if not await self.fill(2):
                return None
            opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length in (126, 127):
                offset = 4 if length == 126 else 10
                if not await self.fill(offset):
                    return None
                length = int.from_bytes(self.buffer[2:offset], "big")
            if not await self.fill(offset + length):
                return None
            payload = self.take(offset + length)[offset:]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


async def read_response(stream: trio.SocketStream) -> tuple[int | None, dict[bytes, bytes], bytes]:
    return await RawReader(stream).response()


async def exchange(stack: Stack, data: bytes) -> tuple[int | None, dict[bytes, bytes], Any]:
    stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
    async with stream:
        # The server may answer and close before it has taken everything.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(data)
        with trio.fail_after(5):
            status, headers, body = await read_response(stream)
    return status, headers, orjson.loads(body) if body else None


MALFORMED = [
    ("garbage bytes", b"\x00\xff\xfe\xfd garbage\r\n\r\n", 400, "bad_request"),
    ("random binary", os.urandom(4096).replace(b"\r\n", b"xx") + b"\r\n\r\n", 400, "bad_request"),
    ("bad version", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400, "unsupported_http_version"),
    ("malformed version", b"GET /health HTTP/one\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "unsupported_http_version"),
    ("no Host", b"GET /health HTTP/1.1\r\n\r\n", 400, "bad_request"),
    ("header without colon", b"GET /health HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
    (
        "NUL in a header",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        400,
        "bad_request",
    ),
    ("space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request"),
    (
        "conflicting lengths",
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "bad chunk size",
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "bad_request",
    ),
    (
        "huge declared body",
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
        b"Content-Length: 999999999999\r\n\r\n",
        413,
        "body_too_large",
    ),
    (
        "request line of 20 KB",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431,
        "head_too_large",
    ),
    (
        "20 KB in one header",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n",
        431,
        "head_too_large",
    ),
    (
        "upgrade without key",
        WS_HEAD.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"") + b"\r\n",
        400,
        "bad_handshake",
    ),
    (
        "upgrade with a short key",
        WS_HEAD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ=") + b"\r\n",
        400,
        "bad_handshake",
    ),
    (
        "upgrade with a non-base64 key",
        WS_HEAD.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"!!!!!!!!!!!!!!!!!!!!!!!!") + b"\r\n",
        400,
        "bad_handshake",
    ),
    (
        "upgrade without Connection",
        WS_HEAD.replace(b"Connection: Upgrade\r\n", b"") + b"\r\n",
        400,
        "bad_handshake",
    ),
    (
        "upgrade with version 8",
        WS_HEAD.replace(b"Version: 13", b"Version: 8") + b"\r\n",
        426,
        "unsupported_websocket_version",
    ),
    ("upgrade with a body", WS_HEAD + b"Content-Length: 5\r\n\r\nhello", 400, "bad_request"),
    # Refused from its head: nothing waits for a body that never comes.
    (
        "upgrade with a chunked body",
        WS_HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
        400,
        "bad_request",
    ),
    ("upgrade by POST", WS_HEAD.replace(b"GET", b"POST") + b"\r\n", 405, "method_not_allowed"),
    ("bad since", WS_HEAD.replace(b"/ws", b"/ws?since=-1") + b"\r\n", 400, "invalid_since"),
]


@pytest.mark.parametrize(
    ("case", "data", "status", "error"), MALFORMED, ids=[c[0] for c in MALFORMED]
)
async def test_malformed_requests_get_a_4xx_json_error(
    case: str, data: bytes, status: int, error: str
) -> None:
    # One connection per address, so a place leaked by a refused upgrade would show below.
    config = make_config(gateway=GatewayConfig(port=0, max_connections_per_ip=1))
    async with running_stack(config) as stack:
        got, headers, body = await exchange(stack, data)
        assert got == status, (case, got, body)
        assert body["error"] == error and isinstance(body["detail"], str), body
        assert headers[b"content-type"] == b"application/json"
        if status == 426:
            assert headers[b"sec-websocket-version"] == b"13"
        assert stack.sessions.count_children().active == 0
        await assert_still_serving(stack)


async def test_many_header_lines_over_the_head_limit() -> None:
    async with running_stack() as stack:
        headers = b"".join(b"X-%d: %s\r\n" % (number, b"v" * 100) for number in range(200))
        status, _, body = await exchange(
            stack, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
        )
        assert status == 431 and body["error"] == "head_too_large"
        await assert_still_serving(stack)


async def test_http_1_0_is_still_served() -> None:
    async with running_stack() as stack:
        status, _, body = await exchange(stack, b"GET /health HTTP/1.0\r\n\r\n")
        assert status == 200 and body["status"] == "healthy"


async def test_slowloris_head_is_closed_within_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_stack() as stack:
        timeout_s = stack.config.gateway.handshake_timeout_s
        stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        started = trio.current_time()
        closed = trio.Event()

        async def dribble() -> None:
            try:
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                while not closed.is_set():
                    await stream.send_all(b"X")  # one header byte a second, never a full head
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            with trio.fail_after(timeout_s + 2):
                status, _, _ = await read_response(stream)
            closed.set()
        assert status is None  # closed without an answer
        assert trio.current_time() - started <= timeout_s + 1
        await stream.aclose()
        await assert_still_serving(stack)


async def test_slow_body_gets_408_within_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_stack() as stack:
        timeout_s = stack.config.gateway.handshake_timeout_s
        async with await trio.open_tcp_stream("127.0.0.1", stack.gateway.port) as stream:
            await stream.send_all(
                b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
                b'Content-Length: 100\r\n\r\n{"type": '
            )
            with trio.fail_after(timeout_s + 2):
                status, _, body = await read_response(stream)
        assert status == 408 and orjson.loads(body)["error"] == "request_timeout"
        await assert_still_serving(stack)


async def test_idle_keep_alive_connection_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    async with running_stack() as stack:
        async with await trio.open_tcp_stream("127.0.0.1", stack.gateway.port) as stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await read_response(stream)
            assert status == 200
            with trio.fail_after(stack.config.gateway.handshake_timeout_s + 1):
                assert await stream.receive_some(1024) == b""
        await assert_still_serving(stack)


# --- hostile WebSocket frames after a good handshake -------------------------------------------


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head = bytes([first, mask_bit | len(payload)])
    elif len(payload) < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))


HOSTILE_FRAMES = [
    ("invalid UTF-8 text", client_frame(0x1, b'{"action": "\xff\xfe"}'), 1007),
    ("unmasked frame", client_frame(0x1, b'{"action": "ping"}', masked=False), 1002),
    ("reserved opcode", client_frame(0x3, b"?"), 1002),
    ("oversized control frame", client_frame(0x9, b"p" * 200), 1002),
    ("fragmented ping", client_frame(0x9, b"p", fin=False), 1002),
    ("continuation without a start", client_frame(0x0, b"tail"), 1002),
]


@pytest.mark.parametrize(
    ("case", "frame", "code"), HOSTILE_FRAMES, ids=[c[0] for c in HOSTILE_FRAMES]
)
async def test_protocol_violations_close_that_connection_only(
    case: str, frame: bytes, code: int
) -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as neighbour:
        await neighbour.get_message()
        async with await trio.open_tcp_stream("127.0.0.1", stack.gateway.port) as stream:
            await stream.send_all(WS_HEAD + b"\r\n")
            reader = RawReader(stream)
            with trio.fail_after(5):
                status, _, _ = await reader.response()
                assert status == 101
                await stream.send_all(frame)
                # A close frame with the code, or (as RFC 6455 7.1.7 allows, and trio-websocket
                # does on a framing error) the TCP connection dropped at once.
                assert await reader.close_code() in (code, None), case
        await stack.publish({"type": "heartbeat", "data": {}})
        with trio.fail_after(5):
            assert orjson.loads(await neighbour.get_message())["seq"] == 1
        await assert_still_serving(stack)


async def test_a_frame_declaring_an_enormous_length_closes_with_1009() -> None:
    async with running_stack() as stack:
        async with await trio.open_tcp_stream("127.0.0.1", stack.gateway.port) as stream:
            await stream.send_all(WS_HEAD + b"\r\n")
            reader = RawReader(stream)
            with trio.fail_after(5):
                status, _, _ = await reader.response()
                assert status == 101
                mask = b"\x00\x00\x00\x00"
                await stream.send_all(bytes([0x81, 0xFF]) + struct.pack("!Q", 2**62) + mask)
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"x" * (stack.config.gateway.max_frame_bytes + 4096))
                assert await reader.close_code() == 1009
        await assert_still_serving(stack)
