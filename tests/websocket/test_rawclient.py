"""The bare-socket client and its cases, checked against an independent server.

Every case of `cases.py` is played against the `websockets` library's server (a well-tested
RFC 6455 implementation, given Sigma's `ping` and `subscribe` actions, a welcome, binary frames
refused with 1003 and `MAX_FRAME_BYTES` as its limit). Each must pass there: this shows that
each case can pass, that the codes it expects are the RFC's, and that the raw client frames and
reads correctly. A failure here is a fault of the test client, not of Sigma.

Then the client's own checks of what a server sends: each refuses what the RFC forbids.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator

import cases
import orjson
import pytest
from rawclient import (
    Frame,
    Opcode,
    ServerFrameDecoder,
    close_payload,
    encode_frame,
    mask,
    parse_close,
    raw_client,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HOST = "127.0.0.1"


async def application(ws: ServerConnection) -> None:
    """Sigma's client actions, as far as the cases use them."""
    await ws.send(orjson.dumps({"type": "notification", "seq": None, "data": {}}).decode())
    try:
        async for message in ws:
            if isinstance(message, bytes):
                await ws.close(cases.UNSUPPORTED_DATA)
                return
            request = orjson.loads(message)
            data = {"request_id": request.get("id")}
            if request["action"] == "ping":
                await ws.send(orjson.dumps({"type": "pong", "seq": None, "data": data}).decode())
            elif request["action"] == "subscribe":
                data["subscriptions"] = request["types"]
                reply = {"type": "subscriptions", "seq": None, "data": data}
                await ws.send(orjson.dumps(reply).decode())
    except ConnectionClosed:
        pass


@pytest.fixture(scope="module")
def reference_port() -> Iterator[int]:
    """The port of a `websockets` server running in a thread of its own for this module."""
    ports: queue.Queue[int] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve(
            application, HOST, 0, max_size=cases.MAX_FRAME_BYTES, ping_interval=None
        ) as server:
            ports.put(server.sockets[0].getsockname()[1])
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    yield ports.get(timeout=5)
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=5)
    loop.close()


@pytest.mark.parametrize("name", cases.FAILURES.keys())
async def test_failure_cases_get_their_close_code(reference_port: int, name: str) -> None:
    data, code = cases.FAILURES[name]
    async with raw_client(HOST, reference_port) as client:
        await cases.expect_failure(client, data, code)


@pytest.mark.parametrize("name", cases.ANSWERED.keys())
async def test_answered_cases_pass(reference_port: int, name: str) -> None:
    async with raw_client(HOST, reference_port) as client:
        await cases.ANSWERED[name](client)


@pytest.mark.parametrize("parts", cases.UTF8_SPLITS.values(), ids=cases.UTF8_SPLITS.keys())
async def test_valid_utf8_splits_pass(reference_port: int, parts: list[bytes]) -> None:
    async with raw_client(HOST, reference_port) as client:
        await cases.valid_utf8_split(client, parts)


@pytest.mark.parametrize("code", cases.VALID_CLOSE_CODES)
async def test_valid_close_codes_pass(reference_port: int, code: int) -> None:
    async with raw_client(HOST, reference_port) as client:
        await cases.client_closes_with(client, code)


async def test_a_server_that_drops_tcp_without_a_close_frame_fails_the_case(
    reference_port: int,
) -> None:
    """The cases can fail: here TCP closes with no close frame, as today's server does."""
    async with raw_client(HOST, reference_port) as client:
        await client.send(b"\x88")  # half a close frame header, then our FIN
        await client.stream.send_eof()
        with pytest.raises(AssertionError, match="without a close frame"):
            await client.receive_close()


SERVER_FRAMES_THE_RFC_FORBIDS = {
    "masked": (encode_frame(Opcode.TEXT, b"{}"), "masked"),
    "rsv-bits": (encode_frame(Opcode.TEXT, b"{}", rsv=0b100, masked=False), "RSV"),
    "reserved-opcode": (encode_frame(3, b"", masked=False), "reserved opcode"),
    "fragmented-ping": (encode_frame(Opcode.PING, b"", fin=False, masked=False), "fragmented"),
    "ping-over-125-bytes": (encode_frame(Opcode.PING, b"x" * 126, masked=False), "126-byte"),
}


@pytest.mark.parametrize(
    ("data", "complaint"),
    SERVER_FRAMES_THE_RFC_FORBIDS.values(),
    ids=SERVER_FRAMES_THE_RFC_FORBIDS.keys(),
)
def test_the_decoder_refuses_server_frames_the_rfc_forbids(data: bytes, complaint: str) -> None:
    decoder = ServerFrameDecoder()
    decoder.feed(data)
    with pytest.raises(AssertionError, match=complaint):
        decoder.next_frame()


def test_the_decoder_waits_for_whole_frames_and_splits_them() -> None:
    long = encode_frame(Opcode.TEXT, b"y" * 70_000, masked=False)
    data = encode_frame(Opcode.PONG, b"p", masked=False) + long
    decoder = ServerFrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() == Frame(Opcode.PONG, b"p")
    assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    assert decoder.next_frame() == Frame(Opcode.TEXT, b"y" * 70_000)
    assert decoder.pending == 0


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (b"\x03", "1-byte body"),
        (close_payload(1005), "1005"),
        (close_payload(2000), "2000"),
        (close_payload(1000, b"\xff"), "not UTF-8"),
    ],
)
def test_a_bad_close_from_the_server_is_refused(payload: bytes, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        parse_close(Frame(Opcode.CLOSE, payload))


def test_a_masked_client_frame_unmasks_to_its_payload() -> None:
    frame = encode_frame(Opcode.TEXT, b"hello, world")
    assert frame[1] == 0x80 | 12
    key = frame[2:6]
    assert mask(frame[6:], key) == b"hello, world"
