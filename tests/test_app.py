"""The whole tree of `sigma serve`, in process, over real sockets: engine to client."""

from __future__ import annotations

import itertools
import lzma
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from helpers import tree_config
from trio_websocket import WebSocketConnection, open_websocket_url

from sigma.app import RunningApp, serve
from sigma.config import Config, EngineConfig
from sigma.engine.server import run_engine
from sigma.supervision.spec import ChildExited, ChildStarted


@asynccontextmanager
async def running_app(config: Config) -> AsyncIterator[RunningApp]:
    async with trio.open_nursery() as nursery:
        app: RunningApp = await nursery.start(serve, config)
        yield app
        nursery.cancel_scope.cancel()


async def next_of_type(
    ws: WebSocketConnection, event_type: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        while True:
            message = orjson.loads(await ws.get_message())
            if message["type"] == event_type:
                return message  # type: ignore[no-any-return]


async def rpc(url: str, method: str, params: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as client:
        reply = (
            await client.post(
                url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            )
        ).json()
    assert "result" in reply, reply
    return reply["result"]


async def test_serve_alone_delivers_system_status_within_one_poll_interval(tmp_path: Path) -> None:
    config = tree_config(tmp_path, poller={"intervals_s": {"system.status": 1.0}})
    async with running_app(config) as app:
        assert app.endpoints.gateway is not None
        async with open_websocket_url(app.endpoints.gateway.ws_url) as ws:
            joined_at = trio.current_time()
            status = await next_of_type(ws, "system_status", timeout_s=1.0 + 0.5)
            assert trio.current_time() - joined_at <= 1.5
        data = status["data"]
        assert 0 <= data["cpu_usage"] <= 100
        assert data["memory"]["total"] > 0
        assert status["seq"] >= 1 and "+00:00" in status["timestamp"]


async def test_compression_job_end_to_end(tmp_path: Path) -> None:
    config = tree_config(tmp_path)
    payload = b"sigma compresses real files " * 40_000
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_bytes(payload)
    async with running_app(config) as app:
        assert app.endpoints.gateway is not None and app.endpoints.engine is not None
        async with open_websocket_url(app.endpoints.gateway.ws_url) as ws:
            await ws.send_message('{"action": "subscribe", "types": ["compression_update"]}')
            job = await rpc(
                app.endpoints.engine.url,
                "compression.jobs.submit",
                {"path": "input.txt", "algorithm": "lzma", "level": 1},
            )
            updates: list[dict[str, Any]] = []
            with trio.fail_after(30):
                while not updates or updates[-1]["state"] not in ("done", "failed", "cancelled"):
                    update = await next_of_type(ws, "compression_update")
                    if update["data"]["id"] == job["id"]:
                        updates.append(update["data"])
            assert updates[-1]["state"] == "done" and updates[-1]["percent"] == 100
            assert all(a != b for a, b in itertools.pairwise(updates))  # no repeats
            final = await rpc(app.endpoints.engine.url, "compression.jobs.get", {"id": job["id"]})
    assert lzma.decompress((tmp_path / "data" / final["output"]).read_bytes()) == payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_engine_in(
    scope: trio.CancelScope, config: EngineConfig, *, task_status: trio.TaskStatus[Any]
) -> None:
    """Run an engine that the test can stop alone, by cancelling `scope`."""
    with scope:
        await run_engine(config, task_status=task_status)


async def test_engine_outage_shows_as_connection_errors_and_recovers_without_gateway_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    engine_config = tree_config(tmp_path).engine.model_copy(update={"port": port})
    config = tree_config(
        tmp_path, engine={"embedded": False, "url": f"http://127.0.0.1:{port}/rpc"}
    )
    first_engine, second_engine = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_engine_in, first_engine, engine_config)
        async with running_app(config) as app:
            assert app.endpoints.gateway is not None
            async with (
                open_websocket_url(app.endpoints.gateway.ws_url) as ws,
                httpx.AsyncClient(base_url=app.endpoints.gateway.http_url) as http,
            ):
                await next_of_type(ws, "system_status")
                assert (await http.get("/health")).json()["status"] == "healthy"
                first_engine.cancel()
                errors = [await next_of_type(ws, "connection_error") for _ in range(3)]
                assert [e["data"]["attempt"] for e in errors] == [1, 2, 3]
                assert errors[0]["data"]["engine_url"] == config.engine.url
                assert (await http.get("/health")).json()["status"] == "degraded"
                await nursery.start(run_engine_in, second_engine, engine_config)
                recovered = await next_of_type(ws, "notification")
                assert recovered["data"]["kind"] == "engine_recovered"
                await next_of_type(ws, "system_status")
                assert (await http.get("/health")).json()["status"] == "healthy"
            gateway = next(c for c in app.root.which_children() if c.id == "gateway")
            assert gateway.restarts == 0
        second_engine.cancel()
    assert first_engine.cancelled_caught and second_engine.cancelled_caught


async def test_serve_arms_the_configured_faults_and_tees_its_supervision_events(
    tmp_path: Path,
) -> None:
    config = tree_config(
        tmp_path,
        faults={"points": [{"point": "heartbeat.tick", "action": "raise", "once": True}]},
        supervisor={"backoff": {"min_s": 0.01, "max_s": 0.02}},
    )
    async with running_app(config) as app:
        events = app.supervision.subscribe()
        with trio.fail_after(10):
            async for event in events:  # the configured fault crashes the heartbeat once
                if isinstance(event, ChildStarted) and event.child_id == "heartbeat":
                    break
        point = app.faults.point("heartbeat.tick")
        assert point.fired == 1 and not point.armed
        assert [c.restarts for c in app.root.which_children() if c.id == "heartbeat"] == [1]
    with trio.fail_after(1):
        remaining = [event async for event in events]  # the channel ends with the tree
    assert any(isinstance(event, ChildExited) and event.reason == "shutdown" for event in remaining)


async def test_a_clean_stop_is_not_reported_as_a_failed_tree(tmp_path: Path) -> None:
    """Cancelling `serve` (what Ctrl-C and SIGTERM do) stops the tree; `/health` must not
    call that a failure while the gateway is still answering during the stop."""
    async with running_app(tree_config(tmp_path)) as app:
        health = app.health
        assert health.report()[0] == 200
    assert health.tree_failed is False
