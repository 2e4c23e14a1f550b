"""RFC 6455 on the server, as a browser sees it: every case from a bare socket.

Each test plays one case of `cases.py` and checks what the peer reads: for a failed
connection, the close frame's code, then (after the close reply a browser sends) a clean TCP
close, EOF and not a reset, so that a browser reports that code and not 1006. Then it checks
that nothing else was disturbed: a neighbour (a real trio-websocket client subscribed to
everything on the same server) received every `seq` in order, and no session was left behind.
The server may give any close reason; only the code is checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import cases
import orjson
import pytest
import trio
from helpers import Stack, eventually, make_config, running_stack
from rawclient import Opcode, RawClient, encode_frame, raw_client
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sigma.config import GatewayConfig


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

    def client(self, *, first_frames: bytes = b"") -> AbstractAsyncContextManager[RawClient]:
        """A bare-socket client, upgraded on `/ws`, closed on exit; `first_frames` go out in
        the same write as its upgrade request."""
        return raw_client(
            self.stack.gateway.host, self.stack.gateway.port, first_frames=first_frames
        )

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
    config = make_config(gateway=GatewayConfig(port=0, max_frame_bytes=cases.MAX_FRAME_BYTES))
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


# What the server must answer, and what it must accept


async def test_fragmented_text_with_pings_between_is_reassembled_and_answered(
    edge: Edge,
) -> None:
    async with edge.client() as client:
        await cases.fragmented_text_with_pings_between(client)
    await edge.assert_undisturbed()


async def test_fragmented_subscribe_is_reassembled_and_answered(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.fragmented_subscribe(client)
        event = (await edge.stack.publish({"type": "rpc_error", "data": {}}))["seq"]
        assert (await client.receive_until("rpc_error"))["seq"] == event
    await edge.assert_undisturbed()


async def test_ping_with_a_125_byte_payload_gets_a_pong_with_the_same_payload(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.ping_with_125_bytes(client)
    await edge.assert_undisturbed()


async def test_frames_sent_with_the_upgrade_request_are_read(edge: Edge) -> None:
    """A client need not wait for the 101: frames right behind its request are its first."""
    early = encode_frame(Opcode.PING, b"early") + encode_frame(
        Opcode.TEXT, orjson.dumps({"action": "ping", "id": 7})
    )
    async with edge.client(first_frames=early) as client:
        assert (await client.receive_until("pong"))["data"]["request_id"] == 7
        assert b"early" in client.pongs or await client.receive_pong() == b"early"
    await edge.assert_undisturbed()


async def test_a_bad_frame_sent_with_the_upgrade_request_closes_with_1002(edge: Edge) -> None:
    async with edge.client(first_frames=encode_frame(Opcode.TEXT, b"{}", rsv=0b100)) as client:
        assert (await client.closed_by_server()).code == 1002
    await edge.assert_undisturbed()


async def test_unsolicited_pong_is_ignored_and_the_connection_goes_on(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.unsolicited_pong(client)
        event = (await edge.stack.publish({"type": "rpc_error", "data": {}}))["seq"]
        assert (await client.receive_until("rpc_error"))["seq"] == event
    await edge.assert_undisturbed()


@pytest.mark.parametrize("parts", cases.UTF8_SPLITS.values(), ids=cases.UTF8_SPLITS.keys())
async def test_valid_utf8_split_inside_a_code_point_is_accepted(
    edge: Edge, parts: list[bytes]
) -> None:
    async with edge.client() as client:
        await cases.valid_utf8_split(client, parts)
    await edge.assert_undisturbed()


async def test_a_message_of_exactly_max_frame_bytes_is_accepted(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.exactly_max_frame_bytes(client)
    await edge.assert_undisturbed()


async def test_close_1000_from_the_client_is_answered_with_1000_and_tcp_closed(
    edge: Edge,
) -> None:
    async with edge.client() as client:
        await cases.client_closes_with_1000(client)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("code", cases.VALID_CLOSE_CODES)
async def test_a_valid_close_code_is_answered_and_tcp_closed(edge: Edge, code: int) -> None:
    async with edge.client() as client:
        await cases.client_closes_with(client, code)
    await edge.assert_undisturbed()


async def test_an_empty_close_is_answered_and_tcp_closed(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.client_closes_empty(client)
    await edge.assert_undisturbed()


# Failing the connection: the close code the peer must read


@pytest.mark.parametrize("data", cases.PROTOCOL_ERRORS.values(), ids=cases.PROTOCOL_ERRORS.keys())
async def test_protocol_error_closes_with_1002(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await cases.expect_failure(client, data, cases.PROTOCOL_ERROR)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", cases.INVALID_PAYLOADS.values(), ids=cases.INVALID_PAYLOADS.keys())
async def test_invalid_utf8_closes_with_1007(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await cases.expect_failure(client, data, cases.INVALID_PAYLOAD)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", cases.OVERSIZED.values(), ids=cases.OVERSIZED.keys())
async def test_message_over_max_frame_bytes_closes_with_1009(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await cases.expect_failure(client, data, cases.MESSAGE_TOO_BIG)
    await edge.assert_undisturbed()


@pytest.mark.parametrize("data", cases.UNSUPPORTED.values(), ids=cases.UNSUPPORTED.keys())
async def test_binary_frame_is_refused_with_1003(edge: Edge, data: bytes) -> None:
    async with edge.client() as client:
        await cases.expect_failure(client, data, cases.UNSUPPORTED_DATA)
    await edge.assert_undisturbed()


async def test_the_server_closes_tcp_without_waiting_for_the_close_reply(edge: Edge) -> None:
    async with edge.client() as client:
        await cases.no_wait_for_close_reply(client)
    await edge.assert_undisturbed()


async def test_what_arrives_after_a_protocol_error_is_discarded_without_a_reset(
    edge: Edge,
) -> None:
    async with edge.client() as client:
        await cases.discards_what_follows_an_error(client)
    await edge.assert_undisturbed()


async def test_a_peer_that_keeps_sending_after_the_close_cannot_hold_its_session(
    edge: Edge,
) -> None:
    """The server discards what arrives after failing a connection for a bounded time only."""
    junk = encode_frame(Opcode.TEXT, cases.ping_message("junk"))
    async with edge.client() as client:
        await client.send_frame(Opcode.PING, b"x" * 126)
        assert (await client.receive_close()).code == cases.PROTOCOL_ERROR

        async def keep_sending() -> None:
            with contextlib.suppress(trio.BrokenResourceError):  # once the server let go
                while True:
                    await client.send(junk)
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_sending)
            await client.receive_eof()
            await eventually(lambda: edge.stack.sessions.child_count() == 1, timeout_s=5.0)
            nursery.cancel_scope.cancel()
    await edge.assert_undisturbed()


async def test_a_peer_that_never_answers_the_close_has_its_socket_closed_by_the_server(
    edge: Edge,
) -> None:
    """Its session is stopped (1001) and the server shuts its side (EOF); after the close
    timeout it closes the socket too, then and there, holding no descriptor for the peer.
    Bytes the peer sends to a closed socket are answered with a reset."""
    async with edge.client() as client:
        client_id = (await client.receive_json())["data"]["client_id"]
        await edge.stack.sessions.terminate_child(client_id)  # waits out the close timeout
        assert (await client.receive_close()).code == 1001  # and is never answered
        await client.receive_eof()
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            while True:  # a socket the server still held would take these without a word
                await client.send(b"late")
                await trio.sleep(0.05)
    await edge.assert_undisturbed()


# Peers that vanish


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("data", cases.PARTIAL.values(), ids=cases.PARTIAL.keys())
async def test_a_peer_that_vanishes_mid_frame_disturbs_no_one(
    edge: Edge, data: bytes, how: str
) -> None:
    async with edge.client() as client:
        await cases.vanish(client, data, how)
    await edge.assert_undisturbed()


async def test_neighbour_keeps_contiguous_seq_while_broken_peers_come_and_go(edge: Edge) -> None:
    """Every failing input and every vanishing peer, eight at a time, while events flow."""

    async def fail(data: bytes, code: int) -> None:
        async with edge.client() as client:
            await cases.expect_failure(client, data, code)

    async def vanish(data: bytes, how: str) -> None:
        async with edge.client() as client:
            await cases.vanish(client, data, how)

    batch = [{"type": "heartbeat", "data": {}}] * 5

    async def publish_until_cancelled() -> None:
        while True:
            await edge.stack.publish(batch)
            await trio.sleep(0.005)

    runs: list[tuple[Any, ...]] = [(fail, *case) for case in cases.FAILURES.values()]
    runs += [(vanish, data, how) for data in cases.PARTIAL.values() for how in ("fin", "reset")]
    async with trio.open_nursery() as publisher:
        publisher.start_soon(publish_until_cancelled)
        for start in range(0, len(runs), 8):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(edge.stack.publish, batch)  # events in flight every round
                for run, *args in runs[start : start + 8]:
                    nursery.start_soon(run, *args)
        publisher.cancel_scope.cancel()
    await edge.assert_undisturbed()
