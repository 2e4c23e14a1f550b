"""The reliability suite: the whole tree under load while its actors crash, hang, lose the engine.

Every scenario runs the tree in process (`sigma.testing.run_tree`) with its own `Faults`
registry, arms fault points through it, and checks from the clients' side that nothing was lost
or duplicated: each of the 50 clients is a `sigma.client` stream that resumes by itself, and one
`sigma.testing.DeliveryLedger` checks every `seq` each of them received.
The short variants run in the default suite; the long ones are marked `slow`. Figures (faults
injected, events checked, lost, duplicated, restart and resume latencies) are recorded with the
`reliability_figures` fixture and printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from helpers import API_KEY, Stack, eventually, make_config, running_stack, tree_config
from reliability import count_tasks
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

import sigma.client
from sigma.app import poller_period_s
from sigma.app import watchdog_s as watchdog_for
from sigma.config import Config, HubConfig
from sigma.faults import Faults, FaultSpec
from sigma.supervision.spec import ChildHung, ChildStarted
from sigma.testing import (
    DeliveryLedger,
    Publisher,
    PublishFailed,
    SigmaTree,
    latency_summary,
    run_tree,
)
from sigma.testing.tree import FAST_RECONNECT

CLIENTS = 50
SHORT_LOAD_S = 3.0
LONG_LOAD_S = 25.0
CATCH_UP_TIMEOUT_S = 30.0

# kind -> (fault point, root child that restarts, seconds between crashes)
ACTOR_KINDS: dict[str, tuple[str, str | None, float]] = {
    "poller": ("poller.call", "poller", 0.25),
    "hub": ("hub.publish", "hub", 0.5),
    "heartbeat": ("heartbeat.tick", "heartbeat", 0.25),
    "sender": ("sender.write", None, 0.1),
    "engine": ("engine.method", None, 0.25),
}


RELIABILITY_SECTIONS: dict[str, dict[str, Any]] = {
    "api": {"key": API_KEY},
    "heartbeat": {"interval_s": 0.1, "ping_interval_s": 3600.0},
    "supervisor": {
        "max_restarts": 10_000,
        "max_seconds": 10.0,
        "backoff": {"min_s": 0.01, "max_s": 0.05, "reset_after_s": 0.5},
    },
}


def reliability_config(tmp_path: Path, **overrides: dict[str, Any]) -> Config:
    """The whole tree on free ports, polling and beating fast, restarting fast and often."""
    return tree_config(tmp_path, RELIABILITY_SECTIONS, **overrides)


async def follow(tree: SigmaTree, count: int) -> DeliveryLedger:
    """`count` resuming clients on `tree`, all welcomed, checked by one ledger."""
    ledger = DeliveryLedger()
    await tree.follow(ledger, count=count)
    return ledger


def assert_nothing_lost(ledger: DeliveryLedger) -> None:
    ledger.assert_clean()
    assert ledger.figures()["unrecovered"] == 0, ledger.figures()


def rpc_internal_errors(tree: SigmaTree, config: Config) -> float:
    return sum(
        tree.app.metrics.registry.get_sample_value(
            "sigma_rpc_errors_total", {"method": method, "code": "-32603"}
        )
        or 0.0
        for method in config.poller.intervals_s
    )


# --- each actor kind crashed repeatedly under load -----------------------------------------------


@pytest.mark.parametrize(
    "load_s",
    [SHORT_LOAD_S, pytest.param(LONG_LOAD_S, marks=pytest.mark.slow)],
    ids=["short", "long"],
)
@pytest.mark.parametrize("kind", list(ACTOR_KINDS))
async def test_repeated_crashes_under_load_lose_and_duplicate_nothing(
    kind: str,
    load_s: float,
    tmp_path: Path,
    faults: Faults,
    reliability_figures: list[dict[str, Any]],
) -> None:
    point, child, period_s = ACTOR_KINDS[kind]
    config = reliability_config(tmp_path)
    async with run_tree(config, faults=faults) as tree:
        ledger = await follow(tree, CLIENTS)
        async with tree.load() as publisher:
            ends_at = trio.current_time() + load_s
            while trio.current_time() < ends_at:
                faults.arm(FaultSpec(point=point, action="raise", once=True))
                await trio.sleep(period_s)
            faults.clear()
        await ledger.wait_caught_up(await tree.publish_marker(), timeout_s=CATCH_UP_TIMEOUT_S)
        injected = faults.point(point).fired
        children = {info.id: info for info in tree.app.root.which_children()}
        assert tree.app.health.status != "failed"
        assert all(info.state == "running" for info in children.values())
        restarts = tree.supervision.restart_latencies_s(child) if child else []
    assert_nothing_lost(ledger)
    figures = ledger.figures()
    assert injected >= load_s / period_s / 2, "too few faults fired to prove anything"
    if child is not None:
        assert children[child].restarts == injected
        assert len(restarts) == injected
        assert sum(info.restarts for info in children.values()) == injected  # the others: none
    else:
        assert sum(info.restarts for info in children.values()) == 0
    if kind == "engine":
        assert rpc_internal_errors(tree, config) == injected  # each one answered -32603
    closes = ledger.closes()
    if kind == "sender":
        assert closes[1011] == injected, closes  # each crash closed one client: internal error
    if kind == "hub":
        assert closes[1012] >= injected  # each crash told the clients it had to reconnect
    assert set(closes) <= {1011, 1012}  # never an abnormal close (1006), never a failed attempt
    reliability_figures.append(
        {
            "scenario": f"crash {kind} ({point} raise)",
            "load_s": load_s,
            "faults_injected": injected,
            "events_published_by_api": publisher.published,
            **figures,
            "restart_latency": latency_summary(restarts),
        }
    )


# --- a hung actor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "child"), [("heartbeat.tick", "heartbeat"), ("poller.call", "poller")]
)
async def test_a_hung_actor_is_cancelled_and_restarted_by_the_watchdog(
    point: str,
    child: str,
    tmp_path: Path,
    faults: Faults,
    reliability_figures: list[dict[str, Any]],
) -> None:
    config = reliability_config(
        tmp_path,
        supervisor={"watchdog_min_s": 1.0},
        heartbeat={"interval_s": 0.2},
        poller={"timeout_s": 0.5, "intervals_s": {"system.status": 0.2, "agents.list": 0.5}},
    )
    async with run_tree(config, faults=faults) as tree:
        ledger = await follow(tree, 5)
        armed_at = trio.current_time()
        faults.arm(FaultSpec(point=point, action="hang", once=True))
        hung = await tree.supervision.wait_for(ChildHung, child_id=child, timeout_s=20)
        restarted = await tree.supervision.wait_for(ChildStarted, child_id=child, timeout_s=20)
        # After the restart the actor's events flow again, to every client.
        async with tree.connect() as stream:
            await next_of_type(stream, "heartbeat" if child == "heartbeat" else "system_status")
        await ledger.wait_caught_up(await tree.publish_marker(), timeout_s=CATCH_UP_TIMEOUT_S)
        metrics = (await tree.http.get("/metrics")).text
        assert f'sigma_actor_hangs_total{{actor="{child}"}} 1.0' in metrics
        assert f'sigma_actor_restarts_total{{actor="{child}",reason="hung"}} 1.0' in metrics
        restarts = {info.id: info.restarts for info in tree.app.root.which_children()}
    natural_s = (
        config.heartbeat.interval_s if child == "heartbeat" else poller_period_s(config.poller)
    )
    watchdog_s = watchdog_for(natural_s, minimum_s=config.supervisor.watchdog_min_s)
    assert restarts[child] == 1 and sum(restarts.values()) == 1
    ledger.assert_clean()
    figures = ledger.figures()
    reliability_figures.append(
        {
            "scenario": f"hang {child} ({point} hang)",
            "faults_injected": faults.point(point).fired,
            "watchdog_s": watchdog_s,
            "hung_detected_after_s": round(hung.at - armed_at, 3),
            "restart_latency": latency_summary([restarted.at - hung.at]),
            **figures,
        }
    )


async def next_of_type(stream: sigma.client.Stream, event_type: str) -> sigma.client.Event:
    with trio.fail_after(10):
        async for item in stream:
            if isinstance(item, sigma.client.Event) and item.type == event_type:
                return item
    raise AssertionError(f"the stream ended before a {event_type} event")


# --- an engine outage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outage_s", [2.0, pytest.param(30.0, marks=pytest.mark.slow)], ids=["2s", "30s"]
)
async def test_an_engine_outage_is_connection_errors_then_recovery_without_restarts(
    outage_s: float,
    tmp_path: Path,
    faults: Faults,
    reliability_figures: list[dict[str, Any]],
) -> None:
    """The engine stops answering (every call dropped, connections closed unanswered)."""
    config = reliability_config(tmp_path)
    async with run_tree(config, faults=faults) as tree, tree.connect() as stream:
        http = tree.http
        ledger = await follow(tree, 10)
        await next_of_type(stream, "system_status")
        assert (await http.get("/health")).json()["status"] == "healthy"
        faults.arm(FaultSpec(point="engine.method", action="drop"))
        errors: list[sigma.client.Event] = []
        with trio.move_on_after(outage_s):
            while True:
                errors.append(await next_of_type(stream, "connection_error"))
        assert (await http.get("/health")).json()["status"] == "degraded"
        faults.clear()
        recovered = await next_of_type(stream, "notification")
        assert recovered.data["kind"] == "engine_recovered"
        await next_of_type(stream, "system_status")
        assert (await http.get("/health")).json()["status"] == "healthy"
        await ledger.wait_caught_up(await tree.publish_marker(), timeout_s=CATCH_UP_TIMEOUT_S)
        restarts = {info.id: info.restarts for info in tree.app.root.which_children()}
    attempts = [error.data["attempt"] for error in errors]
    assert attempts == list(range(1, len(attempts) + 1))
    assert len(errors) >= outage_s / config.poller.retry_max_s / 2
    assert restarts == dict.fromkeys(restarts, 0)  # not the gateway, not anything
    ledger.assert_clean()
    figures = ledger.figures()
    reliability_figures.append(
        {
            "scenario": f"engine outage {outage_s:g}s (engine.method drop)",
            "faults_injected": faults.point("engine.method").fired,
            "connection_error_events": len(errors),
            "restarts": sum(restarts.values()),
            **figures,
        }
    )


# --- churn -------------------------------------------------------------------------------------

CHURN_CONCURRENCY = 50
CHURN_SEED = 20261125
CHURN_PAD = "x" * 400


async def raw_client(port: int, *, receive_buffer: int | None = None) -> trio.SocketStream:
    """A WebSocket client by hand: its handshake sent, nothing read yet."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(WSConnection(ConnectionType.CLIENT).send(Request("127.0.0.1", "/ws")))
    return stream


async def churn_client(stack: Stack, plan: tuple[str, float, int]) -> None:
    kind, hold_s, count = plan
    if kind == "polite":  # reads a few events, closes with 1000
        async with open_websocket_url(stack.ws_url) as ws:
            for _ in range(count + 1):
                await ws.get_message()
        return
    stream = await raw_client(stack.gateway.port, receive_buffer=2048)
    try:
        if kind == "vanishing":  # reads a little, then drops the TCP connection
            await stream.receive_some(4096)
        elif kind == "slow":  # reads 256 bytes every 5 ms
            with trio.move_on_after(hold_s):
                while True:
                    if not await stream.receive_some(256):
                        break
                    await trio.sleep(0.005)
        else:  # stalled: never reads
            await trio.sleep(hold_s)
    finally:
        await trio.aclose_forcefully(stream)


def churn_plans(connections: int) -> list[tuple[str, float, int]]:
    rng = random.Random(CHURN_SEED)
    kinds = rng.choices(
        ["polite", "vanishing", "slow", "stalled"], weights=[50, 20, 20, 10], k=connections
    )
    return [(kind, rng.uniform(0.05, 0.6), rng.randrange(0, 20)) for kind in kinds]


@pytest.mark.parametrize(
    "connections", [200, pytest.param(1000, marks=pytest.mark.slow)], ids=["200", "1000"]
)
async def test_churn_with_slow_readers_leaks_no_task_and_no_client(
    connections: int, reliability_figures: list[dict[str, Any]]
) -> None:
    config = make_config(hub=HubConfig(queue_size=32))
    plans = churn_plans(connections)
    async with running_stack(config) as stack:
        publisher = Publisher(stack.http, API_KEY, batch=4, period_s=0.02)
        await publisher.publish_once()  # the publisher's keep-alive connection stays open
        await trio.testing.wait_all_tasks_blocked()
        idle_tasks = count_tasks()
        stop = trio.Event()
        started = trio.current_time()
        peak = 0
        async with trio.open_nursery() as load:
            load.start_soon(publisher.run, stop)
            queue = iter(plans)

            async def worker() -> None:
                nonlocal peak
                for plan in queue:
                    await churn_client(stack, plan)
                    peak = max(peak, stack.sessions.count_children().active)

            async with trio.open_nursery() as workers:
                for _ in range(CHURN_CONCURRENCY):
                    workers.start_soon(worker)
            stop.set()
        churn_s = trio.current_time() - started
        await eventually(lambda: stack.sessions.count_children().active == 0, timeout_s=10)
        await trio.testing.wait_all_tasks_blocked()
        assert stack.hub.state.clients == {}
        assert stack.sessions.count_children().specs == 0
        assert count_tasks() == idle_tasks
        slow_cut = stack.hub.state.slow_disconnects
    reliability_figures.append(
        {
            "scenario": f"churn {connections} connections",
            "kinds": {k: sum(p[0] == k for p in plans) for k in sorted({p[0] for p in plans})},
            "churn_s": round(churn_s, 2),
            "peak_sessions": peak,
            "slow_consumers_cut": slow_cut,
            "events_published_by_api": publisher.published,
            "leaked_tasks": 0,
            "clients_left": 0,
        }
    )


# --- the real command: SIGTERM under load, and a tree that gives up -----------------------------


def serve_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(
        f"""
[gateway]
port = 0
[engine]
port = 0
data_dir = "{tmp_path / "data"}"
[api]
key = "{API_KEY}"
[heartbeat]
interval_s = 0.1
[poller]
retry_max_s = 0.5
[poller.intervals_s]
"system.status" = 0.2
"compression.jobs.list" = 0.1
[logging]
format = "json"
{extra}
"""
    )
    return path


async def read_log_until(
    process: trio.Process, log: bytearray, marker: bytes, timeout_s: float = 30
) -> None:
    assert process.stderr is not None
    with trio.fail_after(timeout_s):
        while marker not in log:
            chunk = await process.stderr.receive_some(65536)
            assert chunk, log.decode()
            log += chunk


async def read_log_to_end(process: trio.Process, log: bytearray) -> list[dict[str, Any]]:
    assert process.stderr is not None
    while chunk := await process.stderr.receive_some(65536):
        log += chunk
    return [orjson.loads(line) for line in log.splitlines() if line.startswith(b"{")]


async def start_serve(config: Path) -> tuple[trio.Process, bytearray]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sigma", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process, bytearray()


async def publish_until_refused(publisher: Publisher) -> None:
    with contextlib.suppress(httpx.HTTPError, PublishFailed):
        await publisher.run()


async def follow_url(
    url: str, ledger: DeliveryLedger, *, task_status: trio.TaskStatus[None]
) -> None:
    async with sigma.client.connect(url, reconnect=FAST_RECONNECT, connection_items=True) as stream:
        task_status.started()
        await ledger.follow(stream)


async def test_sigterm_under_load_closes_every_client_with_1001_and_exits_0(
    tmp_path: Path, reliability_figures: list[dict[str, Any]]
) -> None:
    process, log = await start_serve(serve_config(tmp_path))
    try:
        await read_log_until(process, log, b"Sigma running")
        port = int(re.search(rb"ws://127\.0\.0\.1:(\d+)/ws", log).group(1))  # type: ignore[union-attr]
        ledger = DeliveryLedger()
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
            trio.open_nursery() as clients,
        ):
            for _ in range(CLIENTS):
                await clients.start(follow_url, f"ws://127.0.0.1:{port}/ws", ledger)
            publisher = Publisher(http, API_KEY, batch=10, period_s=0.01)
            clients.start_soon(publish_until_refused, publisher)
            await eventually(lambda: publisher.published >= 500)
            signalled_at = trio.current_time()
            process.send_signal(signal.SIGTERM)  # while the publisher is at it
            await ledger.wait_until(  # every client is told, with its close code
                lambda ledger: all(c.closes for c in ledger.clients.values()), timeout_s=15
            )
            all_closed_s = trio.current_time() - signalled_at
            published = publisher.published
            clients.cancel_scope.cancel()
        with trio.fail_after(30):
            lines = await read_log_to_end(process, log)
            assert await process.wait() == 0
        exited_s = trio.current_time() - signalled_at
    finally:
        if process.returncode is None:
            process.kill()
    first_closes = [next(iter(c.closes)) for c in ledger.clients.values()]
    assert first_closes == [1001] * CLIENTS
    ledger.assert_clean()
    figures = ledger.figures()
    assert figures["resumes"] == 0
    assert lines[-1]["event"] == "Sigma stopped cleanly"
    reliability_figures.append(
        {
            "scenario": "SIGTERM under load (subprocess)",
            "events_published_by_api": published,
            **figures,
            "all_clients_closed_1001_within_s": round(all_closed_s, 3),
            "exit_0_within_s": round(exited_s, 3),
        }
    )


async def test_a_tree_past_its_restart_intensity_exits_1_with_one_clear_line(
    tmp_path: Path,
) -> None:
    """Every heartbeat crashes: the tree restarts it `max_restarts` times, then gives up."""
    extra = """
[supervisor]
max_restarts = 3
max_seconds = 10.0
[supervisor.backoff]
min_s = 0.01
max_s = 0.02
[[faults.points]]
point = "heartbeat.tick"
action = "raise"
"""
    process, log = await start_serve(serve_config(tmp_path, extra))
    try:
        with trio.fail_after(60):
            lines = await read_log_to_end(process, log)
            assert await process.wait() == 1
    finally:
        if process.returncode is None:
            process.kill()
    events = [line["event"] for line in lines]
    assert "Sigma running" in events  # it stayed up until the budget was spent
    restarts = [
        line
        for line in lines
        if line["event"] == "Restarting child" and line["child"] == "heartbeat"
    ]
    assert len(restarts) == 3
    last = lines[-1]
    assert last["level"] == "error"
    assert last["event"].startswith("Sigma gave up: the supervision tree could not keep running")
    assert "heartbeat" in last["event"] and "InjectedFault" in last["event"]
