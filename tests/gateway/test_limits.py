"""Limits: the token bucket and rate verdicts as plain classes, then each limit end to end."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
from helpers import Stack, make_config, running_stack
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sigma.config import Config, GatewayConfig, HubConfig, LimitsConfig
from sigma.gateway.limits import AddressLimit, MessageRateLimit, TokenBucket, Verdict

WS_HEADERS = {
    "connection": "Upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def receive_json(ws: WebSocketConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        return orjson.loads(await ws.get_message())  # type: ignore[no-any-return]


# --- the decisions, without trio ---------------------------------------------------------------


def test_token_bucket_starts_full_refills_at_its_rate_and_caps_at_burst() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.4) is False  # 0.8 tokens
    assert bucket.take(0.5) is True  # 1.0 token
    assert bucket.available(100.0) == 3  # never more than the burst
    assert bucket.take(100.0, tokens=4) is False and bucket.available(100.0) == 3
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0, burst=1, now=0.0)


def test_rate_limit_tells_once_a_second_and_closes_on_sustained_abuse() -> None:
    limit = MessageRateLimit(rate_per_s=1, burst=2, abuse_excess_frames=6, abuse_window_s=10, now=0)
    verdicts = [limit.check(0.0) for _ in range(7)]
    assert verdicts == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.REJECT_AND_TELL,
        Verdict.REJECT_QUIETLY,
        Verdict.REJECT_QUIETLY,
        Verdict.REJECT_QUIETLY,
        Verdict.REJECT_QUIETLY,
    ]
    assert limit.take_rejected() == 5 and limit.take_rejected() == 0
    assert limit.check(1.0) is Verdict.ACCEPT  # a token refilled
    assert limit.check(1.0) is Verdict.REJECT_AND_TELL  # told again, a second later
    assert limit.check(1.0) is Verdict.CLOSE  # 7 excess frames within a second: abuse


def test_rate_limit_forgives_excess_spread_over_time() -> None:
    limit = MessageRateLimit(rate_per_s=1, burst=1, abuse_excess_frames=3, abuse_window_s=3, now=0)
    now = 0.0
    for _ in range(100):  # two frames a second: one over the rate, drained by the abuse window
        assert limit.check(now) is Verdict.ACCEPT
        assert limit.check(now) in (Verdict.REJECT_AND_TELL, Verdict.REJECT_QUIETLY)
        now += 1.0


def test_rate_limit_of_zero_is_off() -> None:
    limit = MessageRateLimit(rate_per_s=0, burst=1, abuse_excess_frames=1, abuse_window_s=1, now=0)
    assert all(limit.check(0.0) is Verdict.ACCEPT for _ in range(10_000))


def test_address_limit_counts_per_address_and_release_is_idempotent() -> None:
    limit = AddressLimit(limit=2)
    first, second = limit.acquire("10.0.0.1"), limit.acquire("10.0.0.1")
    assert first is not None and second is not None
    assert limit.acquire("10.0.0.1") is None
    assert limit.acquire("10.0.0.2") is not None
    first.release()
    first.release()
    assert limit.counts["10.0.0.1"] == 1
    assert limit.acquire("10.0.0.1") is not None
    assert limit.acquire("10.0.0.1") is None


def test_defaults_admit_ten_thousand_connections_from_one_address() -> None:
    config = Config()
    assert config.gateway.max_connections >= 10_000
    limit = AddressLimit(config.gateway.max_connections_per_ip)
    assert all(limit.acquire("127.0.0.1") is not None for _ in range(10_000))
    assert config.gateway.max_frame_bytes == 64 * 1024
    assert config.limits.messages_per_s > 0 and config.limits.burst >= 10


# --- end to end --------------------------------------------------------------------------------


async def test_rate_limited_replies_then_4029_on_sustained_abuse() -> None:
    limits = LimitsConfig(messages_per_s=0.5, burst=5, abuse_excess_frames=30, abuse_window_s=60)
    async with (
        running_stack(make_config(limits=limits)) as stack,
        open_websocket_url(stack.ws_url) as ws,
        open_websocket_url(stack.ws_url) as neighbour,
    ):
        await receive_json(ws)
        await receive_json(neighbour)
        for number in range(5):
            await ws.send_message(f'{{"action": "ping", "id": {number}}}')
        for number in range(5):
            assert (await receive_json(ws))["data"]["request_id"] == number
        await ws.send_message('{"action": "ping", "id": "over"}')
        limited = await receive_json(ws)
        assert limited["type"] == "error" and limited["seq"] is None
        assert limited["data"]["code"] == "rate_limited"
        assert "1 frame(s) dropped" in limited["data"]["message"]
        replies: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
            for number in range(200):
                await ws.send_message(f'{{"action": "ping", "id": {number}}}')
            while True:
                replies.append(await receive_json(ws))
        assert closed.value.reason.code == 4029
        assert closed.value.reason.reason == "rate limited"
        assert len(replies) <= 1  # the flood was not answered frame by frame
        await neighbour.send_message('{"action": "ping", "id": "fine"}')
        assert (await receive_json(neighbour))["data"]["request_id"] == "fine"


async def test_a_client_within_its_rate_is_never_limited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = LimitsConfig(messages_per_s=10, burst=10, abuse_excess_frames=1, abuse_window_s=60)
    async with (
        running_stack(make_config(limits=limits)) as stack,
        open_websocket_url(stack.ws_url) as ws,
    ):
        await receive_json(ws)
        for number in range(100):
            await ws.send_message(f'{{"action": "ping", "id": {number}}}')
            assert (await receive_json(ws))["type"] == "pong"
            await trio.sleep(0.1)


async def handshake(stack: Stack) -> httpx.Response:
    return await stack.http.get("/ws", headers=WS_HEADERS)


async def connect_when_admitted(stack: Stack) -> None:
    """Connect once the server has counted a closed session out (that happens after the close)."""
    with trio.fail_after(5):
        for _ in range(500):
            try:
                async with open_websocket_url(stack.ws_url) as ws:
                    assert (await receive_json(ws))["data"]["kind"] == "welcome"
                    return
            except Exception:  # still counted: refused with 503
                await trio.sleep(0.01)
    raise AssertionError("never admitted")


async def test_per_address_limit_refuses_with_503_and_counts_sessions_out() -> None:
    config = make_config(gateway=GatewayConfig(port=0, max_connections_per_ip=2))
    async with running_stack(config) as stack:
        async with open_websocket_url(stack.ws_url) as first:
            await receive_json(first)
            async with open_websocket_url(stack.ws_url) as second:
                await receive_json(second)
                refused = await handshake(stack)
                assert refused.status_code == 503
                assert refused.json()["error"] == "too_many_connections_from_address"
                assert set(refused.json()) == {"error", "detail"}
                assert stack.sessions.count_children().active == 2
            await connect_when_admitted(stack)
        await connect_when_admitted(stack)


async def test_a_client_gone_during_its_handshake_does_not_keep_its_place() -> None:
    config = make_config(gateway=GatewayConfig(port=0, max_connections_per_ip=1))
    async with running_stack(config) as stack:
        for _ in range(5):
            stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
            head = "GET /ws HTTP/1.1\r\nHost: x\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in WS_HEADERS.items())
            await stream.send_all(head.encode() + b"\r\n")
            await stream.aclose()
        await connect_when_admitted(stack)


async def test_total_connection_limit_refuses_with_503() -> None:
    config = make_config(gateway=GatewayConfig(port=0, max_connections=1))
    async with running_stack(config) as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        refused = await handshake(stack)
        assert (refused.status_code, refused.json()["error"]) == (503, "too_many_connections")


async def test_max_subscriptions_per_client_end_to_end() -> None:
    config = make_config(hub=HubConfig(max_subscriptions=3))
    async with running_stack(config) as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        await ws.send_message(
            '{"action": "unsubscribe", "types": ["agent_status", "compression_update", '
            '"connection_error", "heartbeat", "notification", "rpc_error", '
            '"storage_update", "system_status"]}'
        )
        assert (await receive_json(ws))["data"]["subscriptions"] == []
        await ws.send_message(
            '{"action": "subscribe", "types": ["heartbeat", "rpc_error", "notification"]}'
        )
        assert len((await receive_json(ws))["data"]["subscriptions"]) == 3
        await ws.send_message(
            '{"action": "subscribe", "types": ["system_status"], "id": "one-more"}'
        )
        reply = await receive_json(ws)
        assert reply["type"] == "error"
        assert (reply["data"]["code"], reply["data"]["request_id"]) == (
            "too_many_subscriptions",
            "one-more",
        )
        await ws.send_message('{"action": "list_subscriptions"}')
        assert (await receive_json(ws))["data"]["subscriptions"] == [
            "heartbeat",
            "notification",
            "rpc_error",
        ]


async def test_frame_at_the_limit_passes_and_one_byte_more_closes_with_1009() -> None:
    config = make_config(gateway=GatewayConfig(port=0, max_frame_bytes=1024))
    async with running_stack(config) as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        prefix, suffix = '{"action": "ping", "id": "', '"}'
        at_limit = prefix + "x" * (1024 - len(prefix) - len(suffix)) + suffix
        assert len(at_limit) == 1024
        await ws.send_message(at_limit)
        assert (await receive_json(ws))["type"] == "pong"
        await ws.send_message(at_limit.replace('"x', '"xx'))
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1009
