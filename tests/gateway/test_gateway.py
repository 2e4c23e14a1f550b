"""End to end over real sockets: the wire contract as clients see it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import trio
import websockets.asyncio.client
from helpers import API_KEY, make_config, running_stack
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sigma.config import GatewayConfig, HubConfig
from sigma.protocol.event_types import EVENT_TYPES


async def receive_json(ws: WebSocketConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        return orjson.loads(await ws.get_message())  # type: ignore[no-any-return]


async def receive_until(ws: WebSocketConnection, message_type: str) -> dict[str, Any]:
    while (message := await receive_json(ws))["type"] != message_type:
        pass
    return message


async def test_welcome_with_trio_websocket() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        welcome = await receive_json(ws)
        assert welcome["type"] == "notification" and welcome["seq"] is None
        data = welcome["data"]
        assert data["kind"] == "welcome"
        assert data["subscriptions"] == sorted(EVENT_TYPES)
        assert data["last_seq"] == 0
        assert data["epoch"] == stack.hub.state.epoch
        assert data["heartbeat_interval"] == 15.0
        assert data["server_version"] == "0.1.0"
        assert len(data["client_id"]) == 36


def websockets_client_session(url: str, publish_url: str) -> list[dict[str, Any]]:
    """An independent client (the `websockets` library, asyncio) in its own thread."""

    async def session() -> list[dict[str, Any]]:
        async with websockets.asyncio.client.connect(url) as ws:
            received = [orjson.loads(await ws.recv())]
            await ws.send('{"action": "subscribe", "types": ["notification"], "id": "s1"}')
            received.append(orjson.loads(await ws.recv()))
            await ws.send("{oops")
            received.append(orjson.loads(await ws.recv()))
            return received

    return asyncio.run(session())


async def test_welcome_and_replies_with_the_websockets_library() -> None:
    async with running_stack() as stack:
        welcome, subscriptions, error = await trio.to_thread.run_sync(
            websockets_client_session, stack.ws_url, stack.gateway.http_url
        )
    assert welcome["data"]["kind"] == "welcome"
    assert subscriptions["type"] == "subscriptions"
    assert subscriptions["data"] == {
        "subscriptions": sorted(EVENT_TYPES),
        "request_id": "s1",
        "last_seq": 0,
    }
    assert error["data"]["code"] == "invalid_json"


async def test_client_subscribed_to_all_sees_contiguous_seq() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        batch = [{"type": t, "data": {"i": i}} for i, t in enumerate(EVENT_TYPES * 25)]
        first = await stack.publish(batch[:100])
        second = await stack.publish(batch[100:])
        assert first["seqs"] == list(range(1, 101)) and second["seqs"] == list(range(101, 201))
        seqs = [(await receive_json(ws))["seq"] for _ in range(200)]
        assert seqs == list(range(1, 201))


async def test_subscribe_and_unsubscribe_change_what_arrives() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        await ws.send_message(
            orjson.dumps({"action": "unsubscribe", "types": list(EVENT_TYPES), "id": 1}).decode()
        )
        reply = await receive_json(ws)
        assert reply["data"] == {"subscriptions": [], "request_id": 1, "last_seq": 0}
        await stack.publish({"type": "system_status", "data": {}})
        await ws.send_message('{"action": "subscribe", "types": ["rpc_error"], "id": 2}')
        assert (await receive_json(ws))["data"]["subscriptions"] == ["rpc_error"]
        await stack.publish(
            [{"type": "system_status", "data": {}}, {"type": "rpc_error", "data": {"x": 1}}]
        )
        event = await receive_json(ws)
        assert (event["type"], event["seq"], event["data"]) == ("rpc_error", 3, {"x": 1})
        await ws.send_message('{"action": "list_subscriptions", "id": 3}')
        assert (await receive_json(ws))["data"] == {
            "subscriptions": ["rpc_error"],
            "request_id": 3,
            "last_seq": 3,
        }


BAD_FRAMES = [
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "invalid_message"),
    ('{"no_action": true}', "invalid_message"),
    ('{"action": "fly", "id": 5}', "unknown_action"),
    ('{"action": "subscribe", "types": ["weather"]}', "unknown_event_type"),
    ('{"action": "subscribe", "types": 3}', "invalid_message"),
    ('{"action": "ping", "surprise": 1}', "invalid_message"),
]


async def test_every_bad_frame_gets_its_error_and_the_connection_stays_usable() -> None:
    async with (
        running_stack() as stack,
        open_websocket_url(stack.ws_url) as ws,
        open_websocket_url(stack.ws_url) as neighbour,
    ):
        await receive_json(ws)
        await receive_json(neighbour)
        for frame, code in BAD_FRAMES:
            await ws.send_message(frame)
            reply = await receive_json(ws)
            assert reply["type"] == "error", frame
            assert reply["data"]["code"] == code, frame
            assert reply["seq"] is None
        await ws.send_message('{"action": "ping", "id": "still-here"}')
        assert (await receive_json(ws))["data"]["request_id"] == "still-here"
        await stack.publish({"type": "heartbeat", "data": {}})
        assert (await receive_json(ws))["seq"] == 1
        assert (await receive_json(neighbour))["seq"] == 1


async def test_frame_over_the_size_limit_closes_with_1009() -> None:
    config = make_config(gateway=GatewayConfig(port=0, max_frame_bytes=1024))
    async with running_stack(config) as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        await ws.send_message('{"action": "ping", "pad": "' + "x" * 2000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await receive_json(ws)
        assert closed.value.reason.code == 1009


async def test_resume_replays_without_gap_or_duplicate_while_events_flow() -> None:
    async with running_stack() as stack:
        async with open_websocket_url(stack.ws_url) as ws:
            epoch = (await receive_json(ws))["data"]["epoch"]
            await stack.publish([{"type": "heartbeat", "data": {}}] * 10)
            seen = [(await receive_json(ws))["seq"] for _ in range(10)]
        assert seen == list(range(1, 11))
        await stack.publish([{"type": "heartbeat", "data": {}}] * 20)

        async def keep_publishing() -> None:
            for _ in range(20):
                await stack.publish([{"type": "heartbeat", "data": {}}] * 5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_publishing)
            async with open_websocket_url(f"{stack.ws_url}?since=10&epoch={epoch}") as ws:
                welcome = await receive_json(ws)
                assert welcome["data"]["recovered"] is True
                resumed = [(await receive_json(ws))["seq"] for _ in range(120)]
        assert resumed == list(range(11, 131))


async def test_resume_older_than_history_is_not_recovered() -> None:
    config = make_config(hub=HubConfig(history_size=5))
    async with running_stack(config) as stack:
        await stack.publish([{"type": "heartbeat", "data": {}}] * 10)
        async with open_websocket_url(f"{stack.ws_url}?since=2") as ws:
            welcome = await receive_json(ws)
            assert welcome["data"]["recovered"] is False
            assert welcome["data"]["last_seq"] == 10
            await stack.publish({"type": "heartbeat", "data": {}})
            assert (await receive_json(ws))["seq"] == 11
        async with open_websocket_url(f"{stack.ws_url}?since=8&epoch=not-this-one") as ws:
            assert (await receive_json(ws))["data"]["recovered"] is False


async def test_health_answers_while_clients_are_connected() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        response = await stack.http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy" and body["version"] == "0.1.0"
        assert "+00:00" in body["timestamp"]
        stack.health.engine_reachable = False
        assert (await stack.http.get("/health")).json()["status"] == "degraded"
        stack.health.tree_failed = True
        assert (await stack.http.get("/health")).status_code == 503
        await ws.send_message('{"action": "ping"}')
        assert (await receive_json(ws))["type"] == "pong"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/api/publish", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
        ("DELETE", "/ws", 405, "method_not_allowed"),
        ("GET", "/ws", 426, "upgrade_required"),
    ],
)
async def test_plain_http_errors_are_json(method: str, path: str, status: int, error: str) -> None:
    async with running_stack() as stack:
        response = await stack.http.request(method, path)
        assert response.status_code == status
        assert response.json()["error"] == error
        assert (await stack.http.get("/health")).status_code == 200  # same keep-alive client


async def test_publish_api_refuses_without_key_wrong_key_and_bad_body() -> None:
    async with running_stack(make_config(api={"key": ""})) as stack:
        off = await stack.http.post("/api/publish", json={"type": "heartbeat", "data": {}})
        assert off.status_code == 404
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        wrong = await stack.http.post(
            "/api/publish",
            json={"type": "heartbeat", "data": {}},
            headers={"authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        missing = await stack.http.post("/api/publish", json={"type": "heartbeat", "data": {}})
        assert missing.status_code == 401
        auth = {"authorization": f"Bearer {API_KEY}"}
        for body, error in [
            (b"{not json", "invalid_json"),
            (b'{"type": "weather", "data": {}}', "invalid_body"),
            (b'{"type": "heartbeat"}', "invalid_body"),
            (b'{"type": "heartbeat", "data": [], "x": 1}', "invalid_body"),
            (b'[{"type": "heartbeat", "data": {}}, 5]', "invalid_body"),
        ]:
            response = await stack.http.post("/api/publish", content=body, headers=auth)
            assert response.status_code == 400, body
            assert response.json()["error"] == error
            assert response.json()["detail"]
        assert await stack.publish({"type": "heartbeat", "data": {"ok": True}}) == {"seq": 1}
        event = await receive_json(ws)
        assert (event["seq"], event["data"]) == (1, {"ok": True})


async def test_handshake_that_never_completes_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_stack() as stack:
        stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        with trio.fail_after(stack.config.gateway.handshake_timeout_s + 1):
            assert await stream.receive_some(1024) == b""
        assert stack.sessions.count_children().active == 0


async def test_plain_get_keeps_the_connection_alive() -> None:
    async with running_stack() as stack:
        stream = await trio.open_tcp_stream("127.0.0.1", stack.gateway.port)
        for _ in range(3):
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: sigma\r\n\r\n")
            response = b""
            with trio.fail_after(5):
                while b"}" not in response:
                    response += await stream.receive_some(65536)
            head = response.split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200")
            assert b"connection: close" not in head
        await stream.aclose()
