"""State on join over real sockets, with the `websockets` client: snapshots after the welcome,
before live events, and no duplicate on a resume."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import trio
import websockets.asyncio.client
from helpers import API_KEY, running_stack


def session(url: str, count: int, send: list[str] | None = None) -> list[dict[str, Any]]:
    """Connect with the `websockets` library (asyncio, its own thread), send `send` after the
    welcome and return the first `count` messages."""

    async def run() -> list[dict[str, Any]]:
        async with websockets.asyncio.client.connect(url) as ws:
            received = [orjson.loads(await ws.recv())]
            for text in send or []:
                await ws.send(text)
            while len(received) < count:
                received.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
            # nothing more is queued for us: a ping round trip would come after it
            try:
                extra = await asyncio.wait_for(ws.recv(), 0.3)
            except TimeoutError:
                return received
            return [*received, orjson.loads(extra)]

    return asyncio.run(run())


async def test_a_new_client_is_filled_at_once_then_goes_live() -> None:
    async with running_stack() as stack:
        await stack.publish(
            [
                {"type": "system_status", "data": {"cpu_usage": 11.0}},
                {"type": "agent_status", "data": {"agent_id": "w1", "state": "idle"}},
                {"type": "notification", "data": {"message": "history, not state"}},
                {"type": "system_status", "data": {"cpu_usage": 12.0}},
            ]
        )
        messages = await trio.to_thread.run_sync(session, stack.ws_url, 3)
    welcome, first, second = messages
    assert welcome["data"]["kind"] == "welcome" and welcome["data"]["last_seq"] == 4
    assert [(m["type"], m["seq"], m["snapshot"]) for m in (first, second)] == [
        ("agent_status", 2, True),
        ("system_status", 4, True),
    ]
    assert second["data"]["cpu_usage"] == 12.0


async def test_snapshots_come_before_live_events() -> None:
    async with running_stack() as stack:
        await stack.publish({"type": "system_status", "data": {"cpu_usage": 1.0}})

        async def publish_soon() -> None:
            await trio.sleep(0.3)
            await stack.publish({"type": "system_status", "data": {"cpu_usage": 2.0}})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_soon)
            messages = await trio.to_thread.run_sync(session, stack.ws_url, 3)
    assert [(m["seq"], m.get("snapshot")) for m in messages[1:]] == [(1, True), (2, None)]


async def test_a_resume_gets_the_backlog_and_no_duplicate_snapshot() -> None:
    async with running_stack() as stack:
        await stack.publish(
            [{"type": "system_status", "data": {"cpu_usage": float(i)}} for i in range(5)]
        )
        epoch = (await trio.to_thread.run_sync(session, stack.ws_url, 2))[0]["data"]["epoch"]
        resumed = await trio.to_thread.run_sync(session, f"{stack.ws_url}?since=3&epoch={epoch}", 3)
        current = await trio.to_thread.run_sync(session, f"{stack.ws_url}?since=5&epoch={epoch}", 1)
    welcome, *rest = resumed
    assert welcome["data"]["recovered"] is True
    assert [(m["seq"], m.get("snapshot")) for m in rest] == [(4, None), (5, None)]
    assert len(current) == 1 and current[0]["data"]["recovered"] is True


async def test_subscribing_later_sends_that_types_snapshot_after_the_reply() -> None:
    async with running_stack() as stack:
        await stack.publish({"type": "storage_update", "data": {"data_dir": {"percent": 3.0}}})
        unsubscribe = '{"action": "unsubscribe", "types": ["storage_update"], "id": 1}'
        subscribe = '{"action": "subscribe", "types": ["storage_update"], "id": 2}'
        messages = await trio.to_thread.run_sync(session, stack.ws_url, 5, [unsubscribe, subscribe])
    _welcome, snapshot, unsubscribed, subscribed, again = messages
    assert snapshot["seq"] == 1 and snapshot["snapshot"] is True
    assert unsubscribed["data"]["request_id"] == 1 and subscribed["data"]["request_id"] == 2
    assert again["type"] == "storage_update" and again["snapshot"] is True


async def test_the_publish_api_refuses_supervision_events_and_publishes_nothing() -> None:
    async with running_stack() as stack:
        response = await stack.http.post(
            "/api/publish",
            content=orjson.dumps(
                [
                    {"type": "notification", "data": {}},
                    {"type": "supervision", "data": {"kind": "child_exited"}},
                ]
            ),
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_body",
            "detail": "1.type: supervision events come from the tree only",
        }
        assert (await stack.publish({"type": "notification", "data": {}})) == {"seq": 1}


async def test_types_in_the_url_choose_the_first_subscriptions_opt_in_ones_too() -> None:
    async with running_stack() as stack:
        (welcome,) = await trio.to_thread.run_sync(
            session, f"{stack.ws_url}?types=supervision,heartbeat", 1
        )
        assert welcome["data"]["subscriptions"] == ["heartbeat", "supervision"]
        unknown = await stack.http.get("/ws?types=heartbeat,weather", headers=UPGRADE)
        assert unknown.status_code == 400
        assert unknown.json() == {
            "error": "unknown_event_type",
            "detail": "unknown event type(s) weather in types",
        }
        (still,) = await trio.to_thread.run_sync(session, stack.ws_url, 1)
        assert "supervision" not in still["data"]["subscriptions"]  # the default is untouched


UPGRADE = {
    "connection": "upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}
