"""RFC 6455 on the server, as a browser sees it: every case from a bare socket.

In the spirit of the Autobahn testsuite's categories. Each case checks what the peer reads:
the close frame's code, then a clean TCP close (EOF, not a reset, so a browser reports that code
and not 1006), and that a neighbour (a real trio-websocket client subscribed to everything on
the same server) kept receiving contiguous `seq` and no other session was left behind.

When the server fails a connection, the client below answers the close frame as a browser does
and then expects EOF. The server may send a close reason of its choosing; only the code is
checked.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import trio
from helpers import Stack, eventually, make_config, running_stack
from rawclient import (
    Opcode,
    RawClient,
    close_payload,
    encode_frame,
    fragments,
    raw_client,
)
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sigma.config import GatewayConfig

MAX_FRAME_BYTES = 1024
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009


def ping_message(request_id: str = "p", size: int | None = None) -> bytes:
    """An application ping `{"action": "ping", "id": ...}`, its id padded to `size` bytes."""
    message = orjson.dumps({"action": "ping", "id": request_id})
    if size is not None:
        message = orjson.dumps({"action": "ping", "id": request_id + "x" * (size - len(message))})
        assert len(message) == size
    return message


@dataclass
class Neighbour:
    """A well-behaved client on the same server: every `seq` it receives, and how it ended."""

    ws: WebSocketConnection
    first_seq: int
    seqs: list[int] = field(default_factory=list)
    closed: ConnectionClosed | None = None

    async def read(self) -> None:
        """Collect the `seq` of every broadcast event until the connection ends."""
        try:
            while True:
                message = orjson.loads(await self.ws.get_message())
                if message["seq"] is not None:
                    self.seqs.append(message["seq"])
        except ConnectionClosed as closed:
            self.closed = closed


@dataclass
class Edge:
    """A running stack with a neighbour, and bare-socket clients to throw at it."""

    stack: Stack
    neighbour: Neighbour

    def client(self, path: str = "/ws") -> AbstractAsyncContextManager[RawClient]:
        """A bare-socket client, upgraded and closed on exit."""
        return raw_client(self.stack.gateway.host, self.stack.gateway.port, path)

    async def assert_undisturbed(self) -> None:
        """The neighbour still gets every event in order, and no broken peer's session is left."""
        seq = (await self.stack.publish({"type": "notification", "data": {"probe": 1}}))["seq"]
        neighbour = self.neighbour
        await eventually(
            lambda: neighbour.closed is not None or seq in neighbour.seqs, timeout_s=5.0
        )
        assert neighbour.closed is None, f"the neighbour was closed: {neighbour.closed}"
        assert neighbour.seqs == list(range(neighbour.first_seq, seq + 1))
        await eventually(lambda: self.stack.sessions.child_count() == 1, timeout_s=5.0)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    config = make_config(gateway=GatewayConfig(port=0, max_frame_bytes=MAX_FRAME_BYTES))
    async with (
        running_stack(config) as stack,
        open_websocket_url(stack.ws_url) as ws,
        trio.open_nursery() as nursery,
    ):
        with trio.fail_after(5):
            welcome = orjson.loads(await ws.get_message())
        neighbour = Neighbour(ws, first_seq=welcome["data"]["last_seq"] + 1)
        nursery.start_soon(neighbour.read)
        yield Edge(stack, neighbour)
        nursery.cancel_scope.cancel()


async def expect_failure(client: RawClient, data: bytes, code: int) -> None:
    """Send `data`; the server must answer with a close frame of `code`, then close TCP."""
    await client.send(data)
    close = await client.closed_by_server()
    assert close.code == code, f"closed with {close.code} ({close.reason!r}), expected {code}"


# What the server must answer, and what it must accept


async def test_fragmented_text_with_pings_between_is_reassembled_and_answered(
    edge: Edge,
) -> None:
    head, middle, tail = b'{"action": "pi', b'ng", "id": "frag', b'mented"}'
    async with edge.client() as client:
        await client.receive_until("notification")  # the welcome
        await client.send(encode_frame(Opcode.TEXT, head, fin=False))
        await client.send_frame(Opcode.PING, b"first")
        assert await client.receive_pong() == b"first"  # answered inside the message
        await client.send(encode_frame(Opcode.CONTINUATION, middle, fin=False))
        await client.send_frame(Opcode.PING, b"second")
        await client.send(encode_frame(Opcode.CONTINUATION, tail))
        reply = await client.receive_until("pong")
        assert reply["data"]["request_id"] == "fragmented"
        if b"second" not in client.pongs:
            assert await client.receive_pong() == b"second"
        await client.send_close(1000)
        assert (await client.receive_close()).code == 1000
    await edge.assert_undisturbed()


async def test_fragmented_subscribe_is_reassembled_and_answered(edge: Edge) -> None:
    message = orjson.dumps({"action": "subscribe", "types": ["rpc_error"], "id": "s"})
    async with edge.client() as client:
        await client.send(fragments(message, 7))
        reply = await client.receive_until("subscriptions")
        assert reply["data"]["request_id"] == "s"
        assert "rpc_error" in reply["data"]["subscriptions"]
    await edge.assert_undisturbed()


async def test_ping_with_a_125_byte_payload_gets_a_pong_with_the_same_payload(edge: Edge) -> None:
    payload = secrets.token_bytes(125)
    async with edge.client() as client:
        await client.send_frame(Opcode.PING, payload)
        assert await client.receive_pong() == payload
        await client.send_frame(Opcode.PING)
        assert await client.receive_pong() == b""
    await edge.assert_undisturbed()


async def test_unsolicited_pong_is_ignored_and_the_connection_goes_on(edge: Edge) -> None:
    async with edge.client() as client:
        await client.receive_until("notification")
        await client.send_frame(Opcode.PONG, b"nobody asked")
        await client.send_frame(Opcode.PONG)
        await client.send(encode_frame(Opcode.TEXT, ping_message("after-pong")))
        reply = await client.receive_until("pong")
        assert reply["data"]["request_id"] == "after-pong"
        event = (await edge.stack.publish({"type": "rpc_error", "data": {}}))["seq"]
        assert (await client.receive_until("rpc_error"))["seq"] == event
    await edge.assert_undisturbed()


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(lambda data: [data[:-3], data[-3:]], id="inside-a-code-point"),
        pytest.param(lambda data: [data[i : i + 1] for i in range(len(data))], id="every-byte"),
    ],
)
async def test_valid_utf8_split_inside_a_code_point_is_accepted(edge: Edge, split: Any) -> None:
    request_id = "κόσμε-€-𝄞"
    message = orjson.dumps({"action": "ping", "id": request_id})
    assert message.endswith('𝄞"}'.encode())  # the last split falls inside the 4-byte 𝄞
    parts = split(message)
    async with edge.client() as client:
        for index, part in enumerate(parts):
            opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
            await client.send(encode_frame(opcode, part, fin=index == len(parts) - 1))
        assert (await client.receive_until("pong"))["data"]["request_id"] == request_id
    await edge.assert_undisturbed()


async def test_a_message_of_exactly_max_frame_bytes_is_accepted(edge: Edge) -> None:
    message = ping_message("at-the-limit", MAX_FRAME_BYTES)
    async with edge.client() as client:
        await client.send(encode_frame(Opcode.TEXT, message))
        await client.send(fragments(ping_message("fragmented", MAX_FRAME_BYTES), 100))
        first = await client.receive_until("pong")
        second = await client.receive_until("pong")
        assert first["data"]["request_id"].startswith("at-the-limit")
        assert second["data"]["request_id"].startswith("fragmented")
    await edge.assert_undisturbed()


async def test_close_1000_from_the_client_is_answered_with_1000_and_tcp_closed(
    edge: Edge,
) -> None:
    async with edge.client() as client:
        await client.receive_until("notification")
        await client.send_close(1000, b"bye")
        assert (await client.receive_close()).code == 1000
        await client.receive_eof()
    await edge.assert_undisturbed()


@pytest.mark.parametrize(
    "code", [1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 3999, 4000, 4999]
)
async def test_a_valid_close_code_is_answered_and_tcp_closed(edge: Edge, code: int) -> None:
    async with edge.client() as client:
        await client.send_close(code, "κόσμε".encode())
        assert (await client.receive_close()).code in (code, 1000)
        await client.receive_eof()
    await edge.assert_undisturbed()


async def test_an_empty_close_is_answered_and_tcp_closed(edge: Edge) -> None:
    async with edge.client() as client:
        await client.send_close(None)
        assert (await client.receive_close()).code in (None, 1000)
        await client.receive_eof()
    await edge.assert_undisturbed()


# Failing the connection: the close code the peer must read

TEXT = ping_message("bad")

PROTOCOL_ERRORS = {
    "ping-over-125-bytes": encode_frame(Opcode.PING, b"x" * 126),
    "pong-over-125-bytes": encode_frame(Opcode.PONG, b"x" * 126),
    "close-over-125-bytes": encode_frame(Opcode.CLOSE, close_payload(1000, b"x" * 124)),
    "fragmented-ping": encode_frame(Opcode.PING, b"a", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"b"),
    "fragmented-close": encode_frame(Opcode.CLOSE, close_payload(1000), fin=False)
    + encode_frame(Opcode.CONTINUATION, b""),
    "unmasked-text": encode_frame(Opcode.TEXT, TEXT, masked=False),
    "unmasked-ping": encode_frame(Opcode.PING, b"hi", masked=False),
    **{f"rsv{bit}-text": encode_frame(Opcode.TEXT, TEXT, rsv=1 << (3 - bit)) for bit in (1, 2, 3)},
    "rsv-on-ping": encode_frame(Opcode.PING, b"hi", rsv=0b111),
    "rsv-on-continuation": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.CONTINUATION, TEXT[5:], rsv=0b100),
    **{
        f"reserved-opcode-{opcode}": encode_frame(opcode, b"reserved")
        for opcode in (*range(3, 8), *range(11, 16))
    },
    "reserved-opcode-inside-a-message": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(4, b"")
    + encode_frame(Opcode.CONTINUATION, TEXT[5:]),
    "continuation-with-nothing-to-continue": encode_frame(Opcode.CONTINUATION, TEXT),
    "unfinished-continuation-with-nothing-to-continue": encode_frame(
        Opcode.CONTINUATION, TEXT, fin=False
    ),
    "text-inside-a-fragmented-text": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.TEXT, TEXT[5:]),
    "binary-inside-a-fragmented-text": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.BINARY, TEXT[5:]),
    "close-payload-of-one-byte": encode_frame(Opcode.CLOSE, b"\x03"),
    **{
        f"close-code-{code}": encode_frame(Opcode.CLOSE, close_payload(code))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999)
    },
}

INVALID_UTF8 = {
    "0xff-byte": b"\xff",
    "lone-continuation-byte": b"\x80",
    "overlong-slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "beyond-u10ffff": b"\xf4\x90\x80\x80",
}
HEAD, TAIL = b'{"action": "ping", "id": "', b'"}'

INVALID_PAYLOADS = {
    **{
        f"text-{name}": encode_frame(Opcode.TEXT, HEAD + sequence + TAIL)
        for name, sequence in INVALID_UTF8.items()
    },
    **{
        f"fragmented-text-{name}": encode_frame(Opcode.TEXT, HEAD, fin=False)
        + encode_frame(Opcode.CONTINUATION, sequence + TAIL)
        for name, sequence in INVALID_UTF8.items()
    },
    "bad-continuation-byte-in-the-next-fragment": encode_frame(
        Opcode.TEXT, HEAD + b"\xe2", fin=False
    )
    + encode_frame(Opcode.CONTINUATION, b"(" + TAIL),
    "message-ends-inside-a-code-point": encode_frame(Opcode.TEXT, HEAD + TAIL + b"\xe2", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"\x82"),
    **{
        f"close-reason-{name}": encode_frame(
            Opcode.CLOSE, close_payload(1000, b"reason " + sequence)
        )
        for name, sequence in INVALID_UTF8.items()
    },
    "close-reason-cut-inside-a-code-point": encode_frame(
        Opcode.CLOSE, close_payload(1000, "€".encode()[:2])
    ),
}

TOO_BIG = ping_message("big", MAX_FRAME_BYTES + 1)

OVERSIZED = {
    "one-frame": encode_frame(Opcode.TEXT, TOO_BIG),
    "small-fragments": fragments(TOO_BIG, 64),
    "fragments-with-pings-between": fragments(TOO_BIG, 128, between=encode_frame(Opcode.PING)),
    # A header that announces a megabyte, followed by more than the limit of it: the server
    # must not wait for the rest.
    "announced-megabyte": encode_frame(Opcode.TEXT, b"x" * 2**20)[: 2 * MAX_FRAME_BYTES],
}

UNSUPPORTED = {
    "binary-frame": encode_frame(Opcode.BINARY, b"\x00binary"),
    "fragmented-binary": encode_frame(Opcode.BINARY, b"\x00bin", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"ary"),
    "binary-json": encode_frame(Opcode.BINARY, TEXT),
}

FAILURES = {
    **{f"1002-{name}": (data, PROTOCOL_ERROR) for name, data in PROTOCOL_ERRORS.items()},
    **{f"1007-{name}": (data, INVALID_PAYLOAD) for name, data in INVALID_PAYLOADS.items()},
    **{f"1009-{name}": (data, MESSAGE_TOO_BIG) for name, data in OVERSIZED.items()},
    **{f"1003-{name}": (data, UNSUPPORTED_DATA) for name, data in UNSUPPORTED.items()},
}


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
async def test_protocol_error_closes_with_1002(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await expect_failure(client, data, PROTOCOL_ERROR)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", INVALID_PAYLOADS.values(), ids=INVALID_PAYLOADS.keys())
async def test_invalid_utf8_closes_with_1007(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await expect_failure(client, data, INVALID_PAYLOAD)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_message_over_max_frame_bytes_closes_with_1009(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await expect_failure(client, data, MESSAGE_TOO_BIG)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
async def test_binary_frame_is_refused_with_1003(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await expect_failure(client, data, UNSUPPORTED_DATA)
    await edge.assert_undisturbed()


async def test_the_server_closes_tcp_without_waiting_for_the_close_reply(edge: Edge) -> None:
    async with edge.client() as client:
        await client.send_frame(Opcode.PING, b"x" * 126)
        assert (await client.closed_by_server(echo=False)).code == PROTOCOL_ERROR
    await edge.assert_undisturbed()


async def test_what_arrives_after_a_protocol_error_is_discarded_without_a_reset(
    edge: Edge,
) -> None:
    after = encode_frame(Opcode.TEXT, ping_message("ignored")) * 200
    async with edge.client() as client:
        await client.send(encode_frame(Opcode.TEXT, TEXT, rsv=0b100) + after)
        assert (await client.receive_close()).code == PROTOCOL_ERROR
        await client.send(after)
        await client.receive_eof()
    await edge.assert_undisturbed()


# Peers that vanish

PARTIAL = {
    "right-after-the-handshake": b"",
    "after-one-header-byte": b"\x81",
    "inside-the-extended-length": encode_frame(Opcode.TEXT, b"x" * 300)[:3],
    "inside-the-mask-key": encode_frame(Opcode.TEXT, TEXT)[:4],
    "inside-the-payload": encode_frame(Opcode.TEXT, TEXT)[:12],
    "between-fragments": encode_frame(Opcode.TEXT, TEXT[:5], fin=False),
    "inside-a-close-frame": encode_frame(Opcode.CLOSE, close_payload(1000, b"bye"))[:5],
}


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("data", PARTIAL.values(), ids=PARTIAL.keys())
async def test_a_peer_that_vanishes_mid_frame_disturbs_no_one(
    edge: Edge, data: bytes, how: str
) -> None:
    async with edge.client() as client:
        await client.send(data)
        if how == "reset":
            await client.reset()
    await edge.assert_undisturbed()


async def test_neighbour_keeps_contiguous_seq_while_broken_peers_come_and_go(edge: Edge) -> None:
    """Every failure case and every vanishing peer, eight at a time, while events flow."""

    async def fail(data: bytes, code: int) -> None:
        async with edge.client() as client:
            await expect_failure(client, data, code)

    async def vanish(data: bytes) -> None:
        async with edge.client() as client:
            await client.send(data)
            await client.reset()

    async def publish_until_cancelled() -> None:
        while True:
            await edge.stack.publish([{"type": "heartbeat", "data": {}}] * 5)
            await trio.sleep(0.005)

    cases: list[Any] = [(fail, *case) for case in FAILURES.values()]
    cases += [(vanish, data) for data in PARTIAL.values()]
    async with trio.open_nursery() as publisher:
        publisher.start_soon(publish_until_cancelled)
        for start in range(0, len(cases), 8):
            async with trio.open_nursery() as nursery:
                for run, *args in cases[start : start + 8]:
                    nursery.start_soon(run, *args)
        publisher.cancel_scope.cancel()
    assert len(edge.neighbour.seqs) > 5 * len(cases) // 8
    await edge.assert_undisturbed()
