"""Dead-peer detection: one sweep pings quiet clients and closes the ones that stay silent."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from helpers import eventually, make_config, running_stack
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

from sigma.config import HeartbeatConfig
from sigma.gateway.keepalive import KeepAlive


@dataclass(eq=False)
class FakePeer:
    heard: float = 0.0
    pings: list[float] = field(default_factory=list)
    closed: bool = False
    clock: list[float] = field(default_factory=lambda: [0.0])

    def heard_at(self) -> float:
        return self.heard

    def send_ping(self) -> None:
        self.pings.append(self.clock[0])

    def close_silent(self) -> None:
        self.closed = True


def sweep_at(table: KeepAlive, peer: FakePeer, now: float) -> None:
    peer.clock[0] = now
    table.sweep(now)


def test_a_quiet_client_is_pinged_once_the_interval_has_passed() -> None:
    table = KeepAlive(ping_interval_s=10.0, ping_timeout_s=5.0)
    peer = FakePeer(heard=0.0)
    table.add(peer)
    sweep_at(table, peer, 9.9)
    assert peer.pings == []
    sweep_at(table, peer, 10.0)
    assert peer.pings == [10.0]
    sweep_at(table, peer, 12.0)  # waiting for the answer: no second ping
    assert peer.pings == [10.0] and not peer.closed


def test_an_answer_clears_the_ping_and_the_next_one_waits_a_whole_interval() -> None:
    table = KeepAlive(ping_interval_s=10.0, ping_timeout_s=5.0)
    peer = FakePeer(heard=0.0)
    table.add(peer)
    sweep_at(table, peer, 10.0)
    peer.heard = 11.0  # the pong
    sweep_at(table, peer, 15.0)
    sweep_at(table, peer, 20.9)
    assert peer.pings == [10.0] and not peer.closed
    sweep_at(table, peer, 21.0)
    assert peer.pings == [10.0, 21.0]


def test_a_client_silent_past_the_timeout_is_closed_and_forgotten() -> None:
    table = KeepAlive(ping_interval_s=10.0, ping_timeout_s=5.0)
    peer, talker = FakePeer(heard=0.0), FakePeer(heard=0.0)
    table.add(peer)
    table.add(talker)
    sweep_at(table, peer, 10.0)
    talker.heard = 12.0
    sweep_at(table, peer, 14.9)
    assert not peer.closed
    sweep_at(table, peer, 15.0)
    assert peer.closed and not talker.closed
    assert len(table) == 1
    sweep_at(table, peer, 60.0)  # a closed client is not pinged again
    assert peer.pings == [10.0]


def test_a_discarded_session_is_no_longer_watched() -> None:
    table = KeepAlive(ping_interval_s=10.0, ping_timeout_s=5.0)
    peer = FakePeer(heard=0.0)
    table.add(peer)
    table.discard(peer)
    table.discard(peer)  # twice is fine
    sweep_at(table, peer, 100.0)
    assert peer.pings == [] and len(table) == 0


async def test_the_sweep_pings_within_a_tick_of_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table = KeepAlive(ping_interval_s=8.0, ping_timeout_s=4.0)
    assert table.tick_s == 1.0
    peer = FakePeer(heard=trio.current_time())
    peer.clock = [0.0]
    table.add(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        await trio.sleep(8.0 + table.tick_s)
        assert len(peer.pings) == 1
        await trio.sleep(4.0 + table.tick_s)
        assert peer.closed
        nursery.cancel_scope.cancel()


# --- through a real gateway ----------------------------------------------------------------------

FAST_PINGS = HeartbeatConfig(ping_interval_s=5.0, ping_timeout_s=2.0)


async def test_a_client_that_answers_pings_stays_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_stack(make_config(heartbeat=FAST_PINGS)) as stack,
        open_websocket_url(stack.ws_url) as ws,  # trio-websocket answers pings by itself
    ):
        await ws.get_message()  # the welcome
        with trio.move_on_after(60.0):  # twelve ping intervals
            message = await ws.get_message()
            pytest.fail(f"nothing but pings was expected, got {message!r}")
        assert stack.sessions.count_children().active == 1
        await stack.publish({"type": "notification", "data": {"still": "here"}})
        assert "still" in await ws.get_message()


async def test_a_quiet_client_gets_real_websocket_pings_and_is_kept_when_it_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_stack(make_config(heartbeat=FAST_PINGS)) as stack:
        client = WSConnection(ConnectionType.CLIENT)
        stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await stream.send_all(client.send(Request(host="127.0.0.1", target="/ws")))
        pings = 0
        with trio.move_on_after(30.0):
            while True:
                data = await stream.receive_some(65536)
                assert data, "the server closed a client that answered every ping"
                client.receive_data(data)
                for event in client.events():
                    assert isinstance(event, AcceptConnection | TextMessage | Ping)
                    if isinstance(event, Ping):
                        pings += 1
                        await stream.send_all(client.send(event.response()))
        assert 30.0 / (5.0 + 0.5) - 1 <= pings <= 30.0 / 5.0
        assert stack.sessions.count_children().active == 1
        await stream.aclose()
        await eventually(lambda: stack.sessions.count_children().active == 0)


async def test_a_client_that_stops_answering_is_closed_with_1011(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_stack(make_config(heartbeat=FAST_PINGS)) as stack,
        open_websocket_url(stack.ws_url) as ws,
    ):
        await ws.get_message()
        # Stop the client's reader from answering: trio-websocket answers pings only while it
        # reads, and it stops reading once its one-message queue is full and nobody takes it.
        for n in range(4):
            await stack.publish({"type": "notification", "data": {"n": n}})
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(30.0):
            await trio.sleep(20.0)  # long past interval + timeout
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1011
        assert closed.value.reason.reason == "ping timeout"
