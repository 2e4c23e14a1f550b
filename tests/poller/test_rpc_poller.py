"""The rpc-poller: its decisions (tracker, link, schedule), the envelope, the actor end to end."""

from __future__ import annotations

import functools
import itertools
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from sigma.app import Endpoints
from sigma.config import EngineConfig, PollerConfig
from sigma.engine.server import run_engine
from sigma.errors import EngineProtocolError, EngineUnavailable
from sigma.health import HealthBoard
from sigma.hub.messages import HubMessage, Publish
from sigma.poller.actor import (
    INVALID_REPLY,
    EngineClient,
    PollSchedule,
    decode_reply,
    run_poller,
)
from sigma.poller.changes import ChangeTracker, EngineLink
from sigma.protocol.server_messages import Event

MIB = 1024 * 1024
DISK = 50_000 * MIB


def agent(agent_id: str, state: str = "idle", **fields: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "state": state,
        "current_job": None,
        "jobs_done": 0,
        "last_heartbeat": "2026-01-28T12:50:32+00:00",
        **fields,
    }


def job(job_id: str, state: str = "queued", percent: float = 0.0, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "path": "a.txt", "state": state, "percent": percent, **fields}


def storage(free: int = DISK, file_count: int = 3) -> dict[str, Any]:
    total = 2 * DISK
    usage = {"path": "/data", "total": total, "used": total - free, "free": free}
    return {
        "data_dir": {**usage, "percent": round(100 * (total - free) / total, 2)},
        "file_count": file_count,
        "file_bytes": 1234,
        "paths": [],
    }


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


# --- ChangeTracker ----------------------------------------------------------------------------


def test_first_agent_snapshot_publishes_every_agent() -> None:
    events = ChangeTracker().on_result("agents.list", {"agents": [agent("w1"), agent("w2")]})
    assert types(events) == ["agent_status", "agent_status"]
    first = events[0].data
    assert first["agent_id"] == "w1"
    assert first["state"] == "idle"
    assert first["change"] == "added"
    assert first["changed"] == sorted(agent("w1"))
    assert events[0].timestamp.endswith("+00:00")


def test_identical_snapshots_publish_nothing() -> None:
    tracker = ChangeTracker()
    results = {
        "agents.list": {"agents": [agent("w1")]},
        "compression.jobs.list": {"jobs": [job("j1")], "total": 1},
        "storage.status": storage(),
    }
    for method, result in results.items():
        assert tracker.on_result(method, result)
        assert tracker.on_result(method, orjson.loads(orjson.dumps(result))) == []


def test_a_changed_agent_publishes_one_event_saying_what_changed() -> None:
    tracker = ChangeTracker()
    tracker.on_result("agents.list", {"agents": [agent("w1"), agent("w2")]})
    busy = agent("w2", "busy", current_job="j1", last_heartbeat="2026-01-28T12:50:33+00:00")
    events = tracker.on_result("agents.list", {"agents": [agent("w1"), busy]})
    assert types(events) == ["agent_status"]
    data = events[0].data
    assert data["agent_id"] == "w2"
    assert data["state"] == "busy"
    assert data["change"] == "updated"
    assert data["changed"] == ["current_job", "state"]
    assert data["previous"] == {"current_job": None, "state": "idle"}


def test_a_heartbeat_alone_is_not_news() -> None:
    tracker = ChangeTracker()
    tracker.on_result("agents.list", {"agents": [agent("w1")]})
    later = agent("w1", last_heartbeat="2026-01-28T13:00:00+00:00")
    assert tracker.on_result("agents.list", {"agents": [later]}) == []


def test_a_vanished_agent_publishes_a_removal() -> None:
    tracker = ChangeTracker()
    tracker.on_result("agents.list", {"agents": [agent("w1"), agent("w2")]})
    events = tracker.on_result("agents.list", {"agents": [agent("w1")]})
    assert types(events) == ["agent_status"]
    assert events[0].data["agent_id"] == "w2"
    assert events[0].data["change"] == "removed"
    assert tracker.on_result("agents.list", {"agents": [agent("w1")]}) == []


def test_new_and_changed_jobs_are_published_once_each() -> None:
    tracker = ChangeTracker()
    first = tracker.on_result("compression.jobs.list", {"jobs": [job("j1")], "total": 1})
    assert [e.data["job_id"] for e in first] == ["j1"]
    assert first[0].data["id"] == "j1"
    assert first[0].data["change"] == "added"

    running = job("j1", "running", 40.0)
    events = tracker.on_result("compression.jobs.list", {"jobs": [job("j2"), running]})
    assert [(e.data["job_id"], e.data["change"]) for e in events] == [
        ("j2", "added"),
        ("j1", "updated"),
    ]
    changed = events[1].data
    assert changed["state"] == "running"
    assert changed["progress"] == 40.0
    assert changed["changed"] == ["percent", "state"]
    assert changed["previous"] == {"percent": 0.0, "state": "queued"}

    # A job that left the page (aged out of the engine's retention) is not announced.
    assert tracker.on_result("compression.jobs.list", {"jobs": [running]}) == []


def test_system_status_is_published_on_every_poll() -> None:
    tracker = ChangeTracker()
    status = {"cpu_usage": 1.5, "cpu_count": 4}
    for _ in range(2):
        [event] = tracker.on_result("system.status", status)
        assert event.type == "system_status"
        assert event.data == status


def test_storage_ignores_small_moves_of_free_space_but_not_new_files() -> None:
    tracker = ChangeTracker()
    [first] = tracker.on_result("storage.status", storage())
    assert first.type == "storage_update"
    assert first.data["changed"] == ["data_dir", "file_bytes", "file_count", "paths"]
    assert tracker.on_result("storage.status", storage(free=DISK - 4096)) == []
    [update] = tracker.on_result("storage.status", storage(file_count=4))
    assert update.data["changed"] == ["file_count"]
    assert update.data["file_count"] == 4
    # Compared with what was last published, so a slow drift is reported once it adds up.
    assert tracker.on_result("storage.status", storage(free=DISK - 10 * MIB, file_count=4)) == []
    [drift] = tracker.on_result("storage.status", storage(free=DISK - 20 * MIB, file_count=4))
    assert drift.data["changed"] == ["data_dir"]


def test_methods_without_an_event_type_publish_nothing() -> None:
    assert ChangeTracker().on_result("health", {"status": "ok"}) == []


@pytest.mark.parametrize(
    ("method", "result", "message"),
    [
        ("system.status", [1, 2], "result of system.status must be an object, got an array"),
        ("storage.status", None, "result of storage.status must be an object, got null"),
        ("agents.list", {"agents": "w1"}, "result.agents of agents.list must be an array"),
        ("agents.list", {"agents": [{"state": "idle"}]}, "result.agents[0] of agents.list"),
        ("compression.jobs.list", {"total": 0}, "result.jobs of compression.jobs.list"),
        ("compression.jobs.list", {"jobs": [7]}, "result.jobs[0] of compression.jobs.list"),
    ],
)
def test_results_of_the_wrong_shape_are_protocol_errors(
    method: str, result: object, message: str
) -> None:
    with pytest.raises(EngineProtocolError, match=message.replace("[", r"\[")):
        ChangeTracker().on_result(method, result)


# --- EngineLink and PollSchedule --------------------------------------------------------------


def test_link_backs_off_exponentially_within_bounds_and_announces_recovery() -> None:
    link = EngineLink(min_s=0.5, max_s=4.0, rng=random.Random(7))
    assert link.answered("http://e/rpc") == []
    failures = [link.failed("http://e/rpc", "ConnectError: refused") for _ in range(6)]
    assert not link.reachable
    assert [event.data["attempt"] for event, _ in failures] == [1, 2, 3, 4, 5, 6]
    delays = [delay for _, delay in failures]
    assert all(0.5 <= delay <= 4.0 for delay in delays)
    assert delays[0] < 0.5 * 1.2 + 1e-9 and delays[1] >= 1.0 and delays[2] >= 2.0
    assert delays[-1] == 4.0
    event, _ = failures[0]
    assert event.type == "connection_error"
    assert event.data == {
        "engine_url": "http://e/rpc",
        "error": "ConnectError: refused",
        "attempt": 1,
        "retry_in_s": round(delays[0], 3),
    }
    [recovered] = link.answered("http://e/rpc")
    assert recovered.type == "notification"
    assert recovered.data["kind"] == "engine_recovered"
    assert recovered.data["after_attempts"] == 6
    assert recovered.data["engine_url"] == "http://e/rpc"
    assert link.reachable
    assert link.answered("http://e/rpc") == []


def test_schedule_keeps_each_method_on_its_grid_and_skips_missed_slots() -> None:
    schedule = PollSchedule({"a": 1.0, "b": 3.0}, start=10.0)
    assert schedule.next() == ("a", 10.0)
    schedule.polled("a", 10.1)
    assert schedule.next() == ("b", 10.0)
    schedule.polled("b", 10.2)
    assert schedule.next() == ("a", 11.0)
    schedule.polled("a", 14.5)  # a slow reply: the slots at 12, 13 and 14 are skipped
    assert schedule.next() == ("b", 13.0)
    schedule.polled("b", 13.0)
    assert schedule.next() == ("a", 15.0)


# --- the envelope -----------------------------------------------------------------------------

MALFORMED_REPLIES = [
    pytest.param(b"<html>502</html>", "not JSON", id="not-json"),
    pytest.param(b"[]", "expected a JSON object", id="batch"),
    pytest.param(b'{"jsonrpc": "1.0", "id": 1, "result": {}}', "jsonrpc", id="wrong-version"),
    pytest.param(b'{"id": 1, "result": {}}', "jsonrpc: Field required", id="no-version"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 1}', "neither result nor error", id="neither"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "result": 1, "error": {"code": 1, "message": "x"}}',
        "both result and error",
        id="both",
    ),
    pytest.param(b'{"jsonrpc": "2.0", "id": 99, "result": {}}', "id 99 does not match", id="id"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1, "error": {"code": "bad", "message": "x"}}',
        "error.code",
        id="error-code",
    ),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_REPLIES)
def test_malformed_replies_are_protocol_errors(body: bytes, message: str) -> None:
    with pytest.raises(EngineProtocolError, match=message) as caught:
        decode_reply(body, 1)
    assert str(caught.value).startswith("invalid reply")


def test_valid_replies_are_accepted() -> None:
    ok = decode_reply(b'{"jsonrpc": "2.0", "id": 3, "result": null}', 3)
    assert ok.error is None and ok.result is None
    error = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}'
    unread = decode_reply(error, 3)
    assert unread.error is not None and unread.error.code == -32700


# --- the actor against an in-memory transport, on the mock clock ------------------------------

Handler = Callable[[str, httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Harness:
    hub: trio.MemoryReceiveChannel[HubMessage]
    health: HealthBoard
    endpoints: Endpoints

    async def next_events(self) -> list[Event]:
        with trio.fail_after(60):
            message = await self.hub.receive()
        assert isinstance(message, Publish)
        return list(message.events)

    async def collect(self, count: int) -> list[Event]:
        events: list[Event] = []
        while len(events) < count:
            events += await self.next_events()
        return events


def reply(request: httpx.Request, result: object) -> httpx.Response:
    call = orjson.loads(request.content)
    return httpx.Response(
        200, content=orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": result})
    )


@asynccontextmanager
async def mocked_poller(
    handler: Handler,
    intervals_s: dict[str, float],
    *,
    engine_url: str = "http://engine.test/rpc",
    **config: Any,
) -> AsyncIterator[Harness]:
    async def handle(request: httpx.Request) -> httpx.Response:
        return await handler(orjson.loads(request.content)["method"], request)

    poller_config = PollerConfig(intervals_s=intervals_s, **config)
    endpoints = Endpoints(engine_url=engine_url)
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](64)
    health = HealthBoard()
    poller = functools.partial(
        run_poller, transport=httpx.MockTransport(handle), rng=random.Random(1)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(poller, poller_config, endpoints, hub_send, health)
        yield Harness(hub_receive, health, endpoints)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("body", "message"), MALFORMED_REPLIES)
async def test_each_malformed_reply_becomes_an_rpc_error_and_polling_goes_on(
    autojump_clock: trio.abc.Clock, body: bytes, message: str
) -> None:
    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    async with mocked_poller(handler, {"system.status": 1.0}) as poller:
        for _ in range(2):
            [event] = await poller.next_events()
            assert event.type == "rpc_error"
            assert event.data["method"] == "system.status"
            assert event.data["code"] == INVALID_REPLY
            assert event.data["message"].startswith("invalid reply")
            assert message in event.data["message"]
        assert poller.health.engine_reachable


async def test_error_replies_and_bad_results_become_rpc_errors(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        call_id = orjson.loads(request.content)["id"]
        if method == "agents.list":
            return reply(request, {"agents": None})
        error = {"code": -32601, "message": "Method not found", "data": {"method": method}}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call_id, "error": error})

    async with mocked_poller(handler, {"no.such.method": 1.0, "agents.list": 1.0}) as poller:
        first, second = await poller.collect(2)
    assert first.data == {
        "method": "no.such.method",
        "code": -32601,
        "message": "Method not found",
        "data": {"method": "no.such.method"},
    }
    assert second.data["method"] == "agents.list"
    assert second.data["code"] == INVALID_REPLY
    assert "result.agents of agents.list must be an array" in second.data["message"]


async def test_each_method_is_polled_at_its_own_interval(autojump_clock: trio.abc.Clock) -> None:
    calls: list[tuple[str, float]] = []

    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        calls.append((method, trio.current_time()))
        await trio.sleep(0.1)  # the engine takes its time; the grid does not drift
        return reply(request, {"ok": True})

    async with mocked_poller(handler, {"system.status": 1.0, "storage.status": 2.5}) as poller:
        start = trio.current_time()
        await poller.collect(8)
    times = {
        method: [round(at - start, 1) for m, at in calls if m == method]
        for method in ("system.status", "storage.status")
    }
    assert times["system.status"][:6] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert times["storage.status"][:3] == [0.1, 2.5, 5.1]  # at 5.0 system.status came first


async def test_an_unreachable_engine_backs_off_then_recovery_is_announced(
    autojump_clock: trio.abc.Clock,
) -> None:
    down_for = 5
    attempts: list[float] = []

    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        attempts.append(trio.current_time())
        if len(attempts) <= down_for:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return reply(request, {"cpu_usage": 3.0})

    intervals_s = {"system.status": 1.0}
    async with mocked_poller(handler, intervals_s, retry_min_s=0.5, retry_max_s=4.0) as poller:
        errors = await poller.collect(down_for)
        assert not poller.health.engine_reachable
        recovered, status = await poller.next_events()
        assert poller.health.engine_reachable

    assert [e.type for e in errors] == ["connection_error"] * down_for
    assert [e.data["attempt"] for e in errors] == [1, 2, 3, 4, 5]
    assert errors[0].data["engine_url"] == "http://engine.test/rpc"
    assert errors[0].data["error"] == "ConnectError: [Errno 111] Connection refused"
    waits = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
    assert waits == [e.data["retry_in_s"] for e in errors]
    assert all(0.5 <= wait <= 4.0 for wait in waits)
    assert waits[1] >= 1.0 and waits[2] >= 2.0 and waits[4] == 4.0
    assert recovered.type == "notification"
    assert recovered.data["kind"] == "engine_recovered"
    assert recovered.data["after_attempts"] == down_for
    assert status.type == "system_status"


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("silent", "no reply within 0.5 s"),
        ("gateway", "HTTP 503 from http://engine.test/rpc"),
        ("no-url", "the engine's URL is not known yet"),
    ],
)
async def test_silence_proxies_and_a_missing_url_count_as_unreachable(
    autojump_clock: trio.abc.Clock, behaviour: str, error: str
) -> None:
    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        if behaviour == "silent":
            await trio.sleep_forever()
        return httpx.Response(503, text="upstream down")

    engine_url = "" if behaviour == "no-url" else "http://engine.test/rpc"
    async with mocked_poller(
        handler, {"system.status": 1.0}, engine_url=engine_url, timeout_s=0.5
    ) as poller:
        [event] = await poller.next_events()
    assert event.type == "connection_error"
    assert event.data["error"] == error


async def test_a_connection_closed_under_the_poller_is_retried_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = 0

    async def handler(method: str, request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return reply(request, {"cpu_usage": 1.0})

    async with mocked_poller(handler, {"system.status": 1.0}) as poller:
        [event] = await poller.next_events()
    assert event.type == "system_status"
    assert calls == 2


async def test_engine_client_translates_httpx_errors_at_one_point() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = EngineClient(http, timeout_s=1.0)
        with pytest.raises(EngineUnavailable) as caught:
            await client.call("http://engine.test/rpc", "system.status")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# --- the actor against the real engine --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynccontextmanager
async def real_poller(
    endpoints: Endpoints, intervals_s: dict[str, float], **config: Any
) -> AsyncIterator[Harness]:
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](1024)
    health = HealthBoard()
    poller_config = PollerConfig(intervals_s=intervals_s, timeout_s=2.0, **config)
    async with trio.open_nursery() as poller_nursery:
        await poller_nursery.start(run_poller, poller_config, endpoints, hub_send, health)
        yield Harness(hub_receive, health, endpoints)
        poller_nursery.cancel_scope.cancel()


async def until(harness: Harness, done: Callable[[list[Event]], bool]) -> list[Event]:
    seen: list[Event] = []
    with trio.fail_after(5):
        while not done(seen):
            seen += await harness.next_events()
    return seen


async def test_against_the_real_engine(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "a.txt").write_bytes(b"sigma " * 50_000)
    intervals_s = {
        "system.status": 0.05,
        "no.such.method": 0.05,
        "agents.list": 0.05,
        "compression.jobs.list": 0.05,
        "storage.status": 0.05,
    }
    async with trio.open_nursery() as nursery:
        engine = await nursery.start(run_engine, EngineConfig(port=0, data_dir=data_dir))
        endpoints = Endpoints(engine_url=engine.url)
        async with real_poller(endpoints, intervals_s) as poller:
            seen = await until(
                poller,
                lambda seen: (
                    types(seen).count("rpc_error") >= 3 and "storage_update" in types(seen)
                ),
            )
            assert types(seen).count("system_status") >= 2
            assert {"cpu_usage", "memory", "disk"} <= seen[0].data.keys()
            rpc_error = next(e for e in seen if e.type == "rpc_error")
            assert rpc_error.data["method"] == "no.such.method"
            assert rpc_error.data["code"] == -32601
            agents = [e for e in seen if e.type == "agent_status"]
            assert len(agents) == 2 and all(e.data["change"] == "added" for e in agents)
            assert all(e.data["state"] == "idle" for e in agents)

            async with httpx.AsyncClient() as http:
                submit = {"path": "a.txt", "algorithm": "zlib"}
                call = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "compression.jobs.submit",
                    "params": submit,
                }
                job_id = (await http.post(engine.url, json=call)).json()["result"]["id"]

            def job_done(seen: list[Event]) -> bool:
                return any(
                    e.type == "compression_update" and e.data["state"] == "done" for e in seen
                )

            jobs = [e for e in await until(poller, job_done) if e.type == "compression_update"]
            assert {e.data["job_id"] for e in jobs} == {job_id}
            assert jobs[0].data["id"] == job_id
            assert jobs[-1].data["progress"] == 100.0
            assert "state" in jobs[-1].data["changed"]
            # One event per change: every update names what changed, none repeats the last.
            assert all(e.data["changed"] for e in jobs)
            bodies = [{k: v for k, v in e.data.items() if k != "previous"} for e in jobs]
            assert all(a != b for a, b in itertools.pairwise(bodies))
            assert poller.health.engine_reachable
        nursery.cancel_scope.cancel()


async def test_engine_down_then_started_on_its_port(tmp_path: Path) -> None:
    port = free_port()
    endpoints = Endpoints(engine_url=f"http://127.0.0.1:{port}/rpc")
    async with trio.open_nursery() as nursery:
        async with real_poller(
            endpoints, {"system.status": 0.05}, retry_min_s=0.01, retry_max_s=0.05
        ) as poller:
            down = await until(poller, lambda seen: len(seen) >= 3)
            assert types(down) == ["connection_error"] * 3
            assert [e.data["attempt"] for e in down] == [1, 2, 3]
            assert all(e.data["engine_url"] == endpoints.engine_url for e in down)
            assert not poller.health.engine_reachable

            config = EngineConfig(port=port, data_dir=tmp_path / "data")
            await nursery.start(run_engine, config)
            seen = await until(poller, lambda seen: "system_status" in types(seen))
            recovered = next(e for e in seen if e.type == "notification")
            assert recovered.data["kind"] == "engine_recovered"
            assert recovered.data["after_attempts"] >= 3
            assert types(seen)[-2:] == ["notification", "system_status"]
            assert poller.health.engine_reachable
        nursery.cancel_scope.cancel()
