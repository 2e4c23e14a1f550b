"""`Idempotency-Key` on `POST /api/publish` in one process: a retry answers the same seqs and
broadcasts nothing new; a malformed key is refused and publishes nothing."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from helpers import API_KEY, Stack, running_stack
from trio_websocket import WebSocketConnection, open_websocket_url


async def post(stack: Stack, body: Any, key: str | None) -> Any:
    headers = {"authorization": f"Bearer {API_KEY}"}
    if key is not None:
        headers["idempotency-key"] = key
    return await stack.http.post("/api/publish", content=orjson.dumps(body), headers=headers)


async def notifications_until(ws: WebSocketConnection, last: str) -> list[str]:
    seen = []
    with trio.fail_after(5):
        while True:
            message = orjson.loads(await ws.get_message())
            if message["type"] == "notification" and "name" in message["data"]:
                seen.append(message["data"]["name"])
                if message["data"]["name"] == last:
                    return seen


def named(name: str) -> dict[str, Any]:
    return {"type": "notification", "data": {"name": name}}


async def test_a_retry_with_the_same_key_answers_the_same_seqs_and_broadcasts_once() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await ws.get_message()
        first = await post(stack, [named("a"), named("b")], "batch-1")
        again = await post(stack, [named("a"), named("b")], "batch-1")
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() == {"seqs": [1, 2]}
        other = await post(stack, named("c"), "batch-2")
        assert other.json() == {"seq": 3}
        assert await notifications_until(ws, "c") == ["a", "b", "c"]


async def test_a_malformed_key_is_refused_and_nothing_is_published() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await ws.get_message()
        for bad in ["x" * 129, "tab\tinside", ""]:
            response = await post(stack, named("never"), bad)
            assert response.status_code == 400, bad
            assert response.json()["error"] == "invalid_idempotency_key"
            assert "1 to 128 printable ASCII" in response.json()["detail"]
        assert (await post(stack, named("fine"), None)).json() == {"seq": 1}
        assert await notifications_until(ws, "fine") == ["fine"]
