"""`sigma.client.connect` against a real gateway, and against scripted servers for close codes."""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio
from helpers import make_config, running_stack
from trio_websocket import WebSocketRequest, serve_websocket

import sigma.client
from sigma.backoff import FullJitter
from sigma.client import (
    Connected,
    Disconnected,
    Duplicate,
    Gap,
    GatewayClosed,
    GatewayRefused,
    GatewayUnavailable,
    Notice,
    Reconnect,
    RequestFailed,
    TokenExpired,
)
from sigma.client.connection import Welcome
from sigma.client.sequence import Sequencer
from sigma.config import AuthConfig, Config, GatewayConfig
from sigma.protocol.event_types import ALL_EVENT_TYPES, EVENT_TYPES
from sigma.protocol.replies import WelcomeFields, missed_events_notice, welcome
from sigma.protocol.server_messages import Event, encode

FAST = Reconnect(backoff=FullJitter(min_s=0.01, max_s=0.05))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def take(stream: sigma.client.Stream, count: int, timeout_s: float = 5) -> list[Any]:
    items = []
    with trio.fail_after(timeout_s):
        async for item in stream:
            items.append(item)
            if len(items) == count:
                break
    return items


def heartbeats(count: int) -> list[dict[str, Any]]:
    return [{"type": "heartbeat", "data": {"n": n}} for n in range(count)]


# --- against the real gateway --------------------------------------------------------------------


async def test_events_arrive_typed_with_type_and_seq() -> None:
    async with running_stack() as stack, sigma.client.connect(stack.ws_url) as stream:
        assert stream.epoch == stack.hub.state.epoch and stream.last_seq == 0
        await stack.publish([{"type": "notification", "data": {"text": "hi"}}, *heartbeats(1)])
        first, second = await take(stream, 2)
    assert isinstance(first, Event) and (first.type, first.seq) == ("notification", 1)
    assert first.data == {"text": "hi"} and (second.type, second.seq) == ("heartbeat", 2)


async def test_a_dropped_connection_resumes_without_gap_or_duplicate() -> None:
    async with (
        running_stack() as stack,
        sigma.client.connect(stack.ws_url, reconnect=FAST, connection_items=True) as stream,
    ):
        (hello,) = await take(stream, 1)
        assert isinstance(hello, Connected) and hello.resumed is False
        await stack.publish(heartbeats(2))
        assert [i.seq for i in await take(stream, 2)] == [1, 2]
        await stack.sessions.terminate_child(hello.welcome.client_id)
        (gone,) = await take(stream, 1)
        assert isinstance(gone, Disconnected) and gone.code == 1001
        await stack.publish(heartbeats(3))  # while away, perhaps
        again, *events = await take(stream, 4)
    assert isinstance(again, Connected) and again.resumed and again.recovered is True
    assert [(type(e), e.seq) for e in events] == [(Event, 3), (Event, 4), (Event, 5)]


async def test_a_restarted_server_is_a_new_epoch_gap() -> None:
    config = make_config(gateway=GatewayConfig(port=free_port()))
    url = f"ws://127.0.0.1:{config.gateway.port}/ws"
    async with sigma.client.connect(url, reconnect=FAST, wait_connected=False) as stream:
        async with running_stack(config) as first:
            await stream.wait_welcomed()
            await first.publish(heartbeats(2))
            await take(stream, 2)
            old_epoch = first.hub.state.epoch
        async with running_stack(config) as second:
            (gap,) = await take(stream, 1)
            await second.publish(heartbeats(1))
            (event,) = await take(stream, 1)
            new_epoch = second.hub.state.epoch
    assert isinstance(gap, Gap) and gap.reason == "new_epoch"
    assert (gap.previous_epoch, gap.last_seen, gap.epoch) == (old_epoch, 2, new_epoch)
    assert "epoch" in gap.describe() and event.seq == 1


async def test_types_narrow_the_server_side_subscription_and_requests_work() -> None:
    async with (
        running_stack() as stack,
        sigma.client.connect(stack.ws_url, types=["agent_status"]) as stream,
    ):
        assert await stream.list_subscriptions() == {"agent_status"}
        await stack.publish(
            [{"type": "heartbeat", "data": {}}, {"type": "agent_status", "data": {"agent_id": "w"}}]
        )
        applied, event = await take(stream, 2)
        assert isinstance(applied, Notice) and applied.message.type == "subscriptions"
        assert applied.message.data["subscriptions"] == ["agent_status"]
        assert (event.type, event.seq) == ("agent_status", 2)
        assert await stream.subscribe(["heartbeat"]) == {"agent_status", "heartbeat"}
        assert await stream.unsubscribe(["agent_status"]) == {"heartbeat"}
        assert await stream.ping() >= 0
        with pytest.raises(ValueError, match="weather"):
            await stream.subscribe(["weather"])
        await stack.publish(heartbeats(1))
        (beat,) = await take(stream, 1)
        assert (beat.type, beat.seq) == ("heartbeat", 3)


async def test_a_down_gateway_is_unavailable_at_once() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(GatewayUnavailable, match="connection refused"):
        async with sigma.client.connect(url):
            pytest.fail("entered")


SECRET = "s" * 32


def a_token(sub: str = "user", ttl_s: float = 60.0, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time() + ttl_s), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def jwt_config() -> Config:
    return make_config(auth=AuthConfig(mode="jwt", jwt_secret=SECRET, leeway_s=0.0))


async def test_a_refused_upgrade_says_its_status() -> None:
    async with running_stack(jwt_config()) as stack:
        with pytest.raises(GatewayRefused) as refused:
            async with sigma.client.connect(stack.ws_url):
                pytest.fail("entered")
        with pytest.raises(GatewayRefused) as expired:
            async with sigma.client.connect(stack.ws_url, token=a_token(ttl_s=-10)):
                pytest.fail("entered")
    assert refused.value.status == 401 and refused.value.error == "missing_token"
    assert "HTTP 401" in str(refused.value)
    assert expired.value.error == "token_expired"


async def test_refresh_extends_the_session_and_a_401_asks_the_token_source() -> None:
    asked: list[str] = []

    async def fresh() -> str:
        asked.append("fresh")
        return a_token()

    async with (
        running_stack(jwt_config()) as stack,
        sigma.client.connect(stack.ws_url, token=a_token(ttl_s=-10), token_source=fresh) as stream,
    ):
        assert asked == ["fresh"] and stream.connects == 1
        expires_at = await stream.refresh(a_token(ttl_s=3600))
        assert expires_at.timestamp() > time.time() + 3000
        with pytest.raises(RequestFailed) as other_user:
            await stream.refresh(a_token(sub="someone-else"))
        assert other_user.value.code in {"forbidden", "invalid_token"}


async def test_an_error_in_the_body_comes_out_as_itself() -> None:
    async with running_stack() as stack:
        with pytest.raises(KeyError):
            async with sigma.client.connect(stack.ws_url):
                raise KeyError("mine")


def test_bad_arguments_are_value_errors() -> None:
    for kwargs in ({"types": ["weather"]}, {"types": []}, {"buffer": 0}):
        with pytest.raises(ValueError):
            trio.run(_enter, "ws://127.0.0.1:1/ws", kwargs)
    with pytest.raises(ValueError, match="ws:// or wss://"):
        trio.run(_enter, "http://x/ws", {})
    with pytest.raises(ValueError, match="together"):
        trio.run(_enter, "ws://127.0.0.1:1/ws", {"since": 3})


async def _enter(url: str, kwargs: dict[str, Any]) -> None:
    async with sigma.client.connect(url, **kwargs):
        pass


# --- scripted servers: close codes and reconnect timing on the mock clock ------------------------


def welcome_frame(epoch: str = "e1", last_seq: int = 0, recovered: bool | None = None) -> str:
    reply = welcome(
        WelcomeFields(
            client_id="c",
            subscriptions=frozenset(ALL_EVENT_TYPES),  # every seq is this client's: holes count
            last_seq=last_seq,
            epoch=epoch,
            heartbeat_interval_s=15.0,
            recovered=recovered,
        )
    )
    return encode(reply).decode()


Script = Callable[[WebSocketRequest, int], Any]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[str, list[str]]]:
    """A server running `script(request, n)` for the n-th connection; yields (url, paths seen)."""
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        await script(request, len(paths))

    async with trio.open_nursery() as nursery:
        servers = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{servers.port}/ws", paths
        nursery.cancel_scope.cancel()


def closing_with(code: int) -> Script:
    async def script(request: WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        resumed = "since=" in request.path
        await ws.send_message(welcome_frame(last_seq=1, recovered=True if resumed else None))
        await ws.aclose(code=code, reason="scripted")

    return script


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1001, [0.25, 0.25, 0.25]),  # welcomed each time: always the first delay's window
        (1012, [0.25, 0.25, 0.25]),
        (4008, [2.0, 2.0, 2.0]),  # three doublings further on
        (4029, [30.0, 30.0, 30.0]),  # the cap, never sooner
        (1008, [30.0, 30.0, 30.0]),
    ],
)
async def test_close_codes_decide_the_reconnect_delay(
    code: int, expected: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    rng = FixedRng(0.5)
    reconnect = Reconnect(backoff=FullJitter(min_s=0.5, max_s=30.0))
    async with (
        scripted(closing_with(code)) as (url, paths),
        sigma.client.connect(url, reconnect=reconnect, connection_items=True, rng=rng) as stream,
    ):
        items = await take(stream, 6, timeout_s=1000)
    delays = [item.retry_in_s for item in items if isinstance(item, Disconnected)]
    assert delays == expected
    assert all(item.code == code for item in items if isinstance(item, Disconnected))
    assert [type(item) for item in items] == [Connected, Disconnected] * 3
    every = "types=" + "%2C".join(ALL_EVENT_TYPES)  # the default: every type, by URL
    assert paths[0] == f"/ws?{every.replace('%2C', ',')}"
    assert set(paths[1:]) == {f"/ws?{every}&since=1&epoch=e1"}


class FixedRng(random.Random):
    """A random source whose `random()` is always the same: uniform(0, b) is a fixed share of b."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


async def test_failed_attempts_back_off_exponentially_then_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    reconnect = Reconnect(backoff=FullJitter(min_s=1.0, max_s=8.0), max_attempts=6)
    seen: list[tuple[float, float]] = []
    with pytest.raises(GatewayUnavailable, match="connection refused"):
        async with sigma.client.connect(
            url, reconnect=reconnect, connection_items=True, wait_connected=False, rng=FixedRng(1.0)
        ) as stream:
            async for item in stream:
                assert isinstance(item, Disconnected)
                seen.append((trio.current_time(), item.retry_in_s))
    assert [delay for _, delay in seen] == [1.0, 2.0, 4.0, 8.0, 8.0]
    starts = [at for at, _ in seen]
    assert [round(b - a, 6) for a, b in itertools_pairwise(starts)] == [1.0, 2.0, 4.0, 8.0]


def itertools_pairwise(values: list[float]) -> list[tuple[float, float]]:
    return list(itertools.pairwise(values))


async def test_4001_asks_for_a_fresh_token_and_without_a_source_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    headers: list[str | None] = []

    async def script(request: WebSocketRequest, n: int) -> None:
        headers.append(dict(request.headers).get(b"authorization", b"").decode() or None)
        ws = await request.accept()
        await ws.send_message(welcome_frame())
        await ws.aclose(code=4001, reason="token expired")

    tokens = iter(["t2", "t3"])

    async def fresh() -> str:
        return next(tokens)

    async with scripted(script) as (url, _):
        async with sigma.client.connect(
            url, token="t1", token_source=fresh, reconnect=FAST, connection_items=True
        ) as stream:
            with trio.fail_after(100):
                connects = 0
                async for item in stream:
                    connects += isinstance(item, Connected)
                    if connects == 3:
                        break
        assert headers[:3] == ["Bearer t1", "Bearer t2", "Bearer t3"]
        with pytest.raises(TokenExpired) as expired:
            async with sigma.client.connect(url, token="t1") as stream:
                async for _ in stream:
                    pass
    assert expired.value.code == 4001 and "token expired" in str(expired.value)


async def test_a_client_at_fault_close_ends_the_stream() -> None:
    async with scripted(closing_with(1009)) as (url, paths):
        with pytest.raises(GatewayClosed, match="1009"):
            async with sigma.client.connect(url, reconnect=FAST) as stream:
                async for _ in stream:
                    pass
    assert len(paths) == 1


async def test_duplicates_holes_and_dropped_notices_are_explicit() -> None:
    def event(seq: int) -> str:
        return encode(Event(type="heartbeat", seq=seq, data={})).decode()

    async def script(request: WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(welcome_frame(last_seq=0))
        for frame in (event(1), event(1), event(3), encode(missed_events_notice(2)).decode()):
            await ws.send_message(frame)
        await ws.send_message(event(6))
        await ws.send_message(
            '{"type": "error", "timestamp": "2026-01-01T00:00:00+00:00", '
            '"seq": null, "data": {"code": "rate_limited", "message": "x"}}'
        )
        await trio.sleep_forever()

    async with scripted(script) as (url, _), sigma.client.connect(url) as stream:
        items = await take(stream, 7)
    kinds = [(item.type, item.seq) for item in items]
    assert kinds == [
        ("heartbeat", 1),
        ("duplicate", 1),
        ("gap", None),
        ("heartbeat", 3),
        ("gap", None),
        ("heartbeat", 6),
        ("notice", None),
    ]
    assert isinstance(items[1], Duplicate)
    hole, dropped = items[2], items[4]
    assert isinstance(hole, Gap) and (hole.reason, hole.missing, hole.last_seen) == ("hole", 1, 1)
    assert isinstance(dropped, Gap) and (dropped.reason, dropped.missing) == ("events_dropped", 2)
    assert isinstance(items[6], Notice) and items[6].kind == "rate_limited"


def a_welcome(**fields: Any) -> Welcome:
    base = {
        "kind": "welcome",
        "client_id": "c",
        "subscriptions": list(EVENT_TYPES),
        "last_seq": 5,
        "epoch": "e1",
        "heartbeat_interval": 1.0,
        "server_version": "0",
    }
    return Welcome.model_validate({**base, **fields})


def test_sequencer_judges_resumes() -> None:
    sequencer = Sequencer()
    assert sequencer.welcomed(a_welcome()) is None and sequencer.resume_point == (5, "e1")
    assert sequencer.welcomed(a_welcome(last_seq=9, recovered=True)) is None
    assert sequencer.resume_point == (5, "e1")
    gap = sequencer.welcomed(a_welcome(last_seq=9, recovered=False))
    assert gap is not None and (gap.reason, gap.missing, gap.resumes_after) == (
        "not_recovered",
        4,
        9,
    )
    gap = Sequencer(since=3, epoch="old").welcomed(a_welcome(epoch="new", recovered=False))
    assert gap is not None and gap.reason == "new_epoch" and gap.missing is None
    narrow = Sequencer()
    narrow.welcomed(a_welcome(subscriptions=["agent_status"]))
    gap, item = narrow.event(Event(type="agent_status", seq=9, data={}))
    assert gap is None and item.seq == 9  # other types' numbers: no gap
