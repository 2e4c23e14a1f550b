"""The dashboard of one node of a cluster, in Chromium: every node's heartbeats reach the page,
and the session count it shows is its own node's.

Two nodes (`sigma.app.serve`, in this process) share a real redis-server and one engine. The
page connects to the first; two WebSocket clients hold the second.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import API_KEY, needs_binary, tree_config
from trio_websocket import open_websocket_url

from sigma.app import RunningApp, serve
from sigma.config import Config, EngineConfig
from sigma.engine.server import EngineHandle, run_engine

pytestmark = [
    needs_binary("chromium", package="chromium"),
    needs_binary("redis-server", package="redis-server"),
]

WATCH_S = 3.0
"""How long the page's count is watched: six heartbeats of each node."""


def node_config(tmp_path: Path, index: int, redis_url: str, engine_url: str) -> Config:
    return tree_config(
        tmp_path / f"node{index}",
        {
            "engine": {"embedded": False, "url": engine_url},
            "api": {"key": API_KEY},
            "broker": {"kind": "redis", "url": redis_url, "node_id": f"node{index}"},
            "heartbeat": {"interval_s": 0.5, "ping_interval_s": 3600.0},
        },
    )


async def hold_clients(url: str, count: int, *, task_status: Any) -> None:
    """Keep `count` WebSocket clients connected (each read past its welcome) until cancelled."""
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            await nursery.start(_one_client, url)
        task_status.started()


async def _one_client(url: str, *, task_status: Any) -> None:
    async with open_websocket_url(url) as ws:
        await ws.get_message()
        task_status.started()
        while True:
            await ws.get_message()


def watch_the_count(url: str) -> tuple[set[str], int]:
    """Open the page; the session counts it showed over `WATCH_S`, and how many heartbeats that
    say two clients (the other node's) it logged meanwhile."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page()
        page.goto(url + "/")
        expect(page.get_by_test_id("connection-state")).to_have_text("connected", timeout=5000)
        shown: set[str] = set()
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            shown.add(page.locator("#sessions-count").inner_text())
            time.sleep(0.05)
        others = page.locator(
            '[data-testid="event"][data-type="heartbeat"]', has_text="2 client(s)"
        ).count()
        browser.close()
    return shown, others


async def test_the_session_count_is_the_connected_nodes_own(
    tmp_path: Path, redis_server: Any
) -> None:
    pytest.importorskip("playwright")
    async with trio.open_nursery() as nursery:
        engine: EngineHandle = await nursery.start(
            run_engine, EngineConfig(port=0, data_dir=tmp_path / "engine")
        )
        configs = [node_config(tmp_path, i, redis_server.url, engine.url) for i in range(2)]
        apps: list[RunningApp] = [await nursery.start(serve, config) for config in configs]
        first, second = (app.endpoints.gateway for app in apps)
        assert first is not None and second is not None
        await nursery.start(functools.partial(hold_clients, second.ws_url, 2))
        shown, others = await trio.to_thread.run_sync(watch_the_count, first.http_url)
        assert others >= 3  # the second node's heartbeats did reach the page
        assert shown == {"1 session(s)"}
        nursery.cancel_scope.cancel()
