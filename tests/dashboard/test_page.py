"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the whole
tree (`sigma.app.serve`) started in process on a free port. Playwright's sync API blocks, so it
runs in a thread; the trio side restarts the server when the page asks for it."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from helpers import API_KEY, needs_binary, tree_config

from sigma.app import RunningApp, serve
from sigma.config import Config

pytestmark = needs_binary("chromium", package="chromium")

ROOT_CHILDREN = ["engine", "hub", "sessions", "gateway", "poller", "heartbeat"]
LOG_ROWS = 200
PLACEHOLDER = "\N{EN DASH}"  # what the page shows before it knows a value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def page_config(tmp_path: Path, port: int) -> Config:
    return tree_config(
        tmp_path,
        gateway={"port": port},
        poller={
            "intervals_s": {
                "system.status": 30.0,
                "storage.status": 30.0,
                "agents.list": 0.3,
                "compression.jobs.list": 0.3,
            }
        },
        # The default 15 s heartbeat: the page must show its age from the welcome, not wait.
        api={"key": API_KEY},
        faults={"admin": True},
    )


class Server:
    """The tree, restartable on the same port from the browser's thread."""

    def __init__(self, nursery: trio.Nursery, config: Config) -> None:
        self.nursery = nursery
        self.config = config
        self.scope: trio.CancelScope | None = None
        self.app: RunningApp | None = None

    async def start(self) -> None:
        self.scope = trio.CancelScope()
        self.app = await self.nursery.start(self._run, self.scope)

    async def _run(self, scope: trio.CancelScope, *, task_status: Any) -> None:
        with scope:
            await serve(self.config, task_status=task_status)

    async def restart(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        await trio.sleep(0.5)
        await self.start()


def drive_browser(
    url: str, screenshot: Path, server: Server, token: trio.lowlevel.TrioToken
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        foreign: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                foreign.append(r.url)
                if not r.url.startswith((url, url.replace("http", "ws")))
                else None
            ),
        )
        by = page.get_by_test_id
        page.goto(url + "/")
        # within 2 s: connected, an epoch, a fresh heartbeat, a CPU figure (polled every 30 s)
        expect(by("connection-state")).to_have_text("connected", timeout=2000)
        expect(by("epoch")).not_to_have_text(PLACEHOLDER, timeout=2000)
        expect(by("heartbeat-age")).to_have_attribute("data-level", "fresh", timeout=2000)
        expect(by("cpu-percent")).to_have_text(_number(), timeout=2000)
        first_epoch = by("epoch").inner_text()

        # the tree: every actor running
        expect(by("actor")).to_have_count(len(ROOT_CHILDREN), timeout=3000)
        assert (
            page.eval_on_selector_all(
                '[data-testid="actor"]', "rows => rows.map(r => r.dataset.actor)"
            )
            == ROOT_CHILDREN
        )
        for row in by("actor").all():
            expect(row).to_have_attribute("data-state", "running")
        # the page is the one client. Its welcome says so, in the frame that drew the tree (no
        # waiting), and the tree's snapshot, from when no session was open, does not overwrite it.
        assert page.locator("#sessions-count").inner_text() == "1 session(s)"

        # the fault panel crashes the poller; its row shows one more restart and running again
        poller = page.locator('[data-testid="actor"][data-actor="poller"]')
        restarts = int(poller.get_attribute("data-restarts") or "0")
        page.locator("#fault-point").select_option("poller.call")
        page.locator("#fault-action").select_option("raise")
        page.locator("#fault-arm").click()
        expect(poller).to_have_attribute("data-restarts", str(restarts + 1), timeout=5000)
        expect(poller).to_have_attribute("data-state", "running", timeout=5000)
        page.screenshot(path=str(screenshot.with_name("dashboard-healed.png")))

        # a type toggled off stops arriving, toggled on arrives again
        toggle = page.locator('[data-testid="subscription-toggle"][data-type="notification"]')
        publish = _publisher(url)
        toggle.uncheck()
        wait_until(page, "!window.sigmaDashboard.client.subscriptions.includes('notification')")
        publish([{"type": "notification", "data": {"message": "while off"}}])
        publish([{"type": "agent_status", "data": {"agent_id": "marker-1", "state": "idle"}}])
        expect(
            page.locator('[data-testid="event"][data-type="agent_status"]').first
        ).to_contain_text("marker-1")
        expect(page.get_by_text("while off")).to_have_count(0)
        toggle.check()
        wait_until(page, "window.sigmaDashboard.client.subscriptions.includes('notification')")
        publish([{"type": "notification", "data": {"message": "back on"}}])
        expect(
            page.locator('[data-testid="event"][data-type="notification"]').first
        ).to_contain_text("back on")

        # a 5,000-event burst is caught up with, and the log stays bounded
        before = page.evaluate("window.sigmaDashboard.view.received")
        burst = [
            {"type": "rpc_error", "data": {"method": "m", "message": f"b{i}"}} for i in range(5000)
        ]
        started = time.monotonic()
        for start in range(0, 5000, 100):
            publish(burst[start : start + 100])
        published_s = time.monotonic() - started
        wait_until(page, f"window.sigmaDashboard.view.received >= {before + 5000}", timeout_s=5.0)
        caught_up_s = time.monotonic() - started
        print(f"burst: published in {published_s:.2f} s, caught up after {caught_up_s:.2f} s")
        assert page.evaluate("window.sigmaDashboard.client.gaps") == 0, page.evaluate(
            "JSON.stringify(window.sigmaDashboard.view.alerts)"
        )
        expect(by("event").filter(has_text="b4999")).to_have_count(1, timeout=1000)
        assert caught_up_s - published_s < 1.0  # caught up within a second of the last publish
        assert by("event").count() <= LOG_ROWS
        page.screenshot(path=str(screenshot), full_page=True)

        assert errors == [], errors  # no console error while the server runs
        # the server restarts: the page reconnects by itself and shows the new epoch
        trio.from_thread.run(server.restart, trio_token=token)
        expect(by("connection-state")).to_have_text("connected", timeout=10000)
        expect(by("epoch")).not_to_have_text(first_epoch, timeout=10000)
        expect(page.locator("#gap")).to_be_visible()

        # while it was down, the browser itself logs each refused reconnect, nothing else
        assert all("ERR_CONNECTION_REFUSED" in error for error in errors), errors
        assert foreign == [], foreign
        browser.close()


def wait_until(page: Any, expression: str, timeout_s: float = 5.0) -> None:
    """Poll a page expression (the page's CSP forbids `wait_for_function`'s in-page eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.02)


def _number() -> Any:
    import re

    return re.compile(r"^\d+(\.\d)?$")


def _publisher(url: str) -> Any:
    http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {API_KEY}"})

    def publish(events: list[dict[str, Any]]) -> None:
        response = http.post("/api/publish", json=events)
        assert response.status_code == 200, response.text

    return publish


async def test_the_dashboard_live_in_chromium(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    port = free_port()
    async with trio.open_nursery() as nursery:
        server = Server(nursery, page_config(tmp_path, port))
        await server.start()
        token = trio.lowlevel.current_trio_token()
        screenshot = tmp_path / "dashboard.png"
        await trio.to_thread.run_sync(
            drive_browser, f"http://127.0.0.1:{port}", screenshot, server, token
        )
        assert screenshot.stat().st_size > 10_000
        nursery.cancel_scope.cancel()
