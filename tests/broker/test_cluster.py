"""Three nodes as one gateway through a real redis-server: numbering, polling, publishing, faults.

Each node is a whole tree (`sigma.app.serve`) in this process on its own ports; they share one
engine (started here, so that its calls can be counted) and one Redis of the test's own.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from helpers import (
    API_KEY,
    EVERY_TYPE,
    RedisServer,
    eventually,
    needs_binary,
    paused_client,
    read_until,
    tree_config,
)
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sigma.app import RunningApp, serve
from sigma.cli.probe import observe
from sigma.cli.probe_verdict import Status, Welcomed, assess
from sigma.config import Config, EngineConfig
from sigma.engine.server import EngineHandle, run_engine
from sigma.faults import Faults, FaultSpec

pytestmark = needs_binary("redis-server", package="redis-server")

LEASE_S = 0.6
_marks = itertools.count()


def node_config(
    tmp_path: Path, index: int, redis_url: str, engine_url: str, **extra: Any
) -> Config:
    return tree_config(
        tmp_path / f"node{index}",
        {
            "engine": {"embedded": False, "url": engine_url},
            "api": {"key": API_KEY},
            "broker": {
                "kind": "redis",
                "url": redis_url,
                "lease_s": LEASE_S,
                "node_id": f"node{index}",
                "publish_timeout_s": 1.0,
            },
            "heartbeat": {"interval_s": 1.0, "ping_interval_s": 3600.0},
        },
        **extra,
    )


@asynccontextmanager
async def engine(tmp_path: Path, faults: Faults | None = None) -> AsyncIterator[EngineHandle]:
    async with trio.open_nursery() as nursery:
        handle: EngineHandle = await nursery.start(
            functools.partial(run_engine, faults=faults),
            EngineConfig(port=0, data_dir=tmp_path / "engine"),
        )
        yield handle
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def cluster(
    configs: list[Config], node_faults: list[Faults] | None = None
) -> AsyncIterator[list[RunningApp]]:
    registries = node_faults or [Faults() for _ in configs]
    async with trio.open_nursery() as nursery:
        apps: list[RunningApp] = [
            await nursery.start(functools.partial(serve, faults=faults), config)
            for config, faults in zip(configs, registries, strict=True)
        ]
        yield apps
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def three_nodes(
    tmp_path: Path,
    redis: RedisServer,
    *,
    faults: Faults | None = None,
    node_faults: list[Faults] | None = None,
    **extra: Any,
) -> AsyncIterator[list[RunningApp]]:
    async with engine(tmp_path, faults) as rpc:
        configs = [node_config(tmp_path, i, redis.url, rpc.url, **extra) for i in range(3)]
        async with cluster(configs, node_faults) as apps:
            yield apps


def ws_url(app: RunningApp, query: str = "") -> str:
    assert app.endpoints.gateway is not None
    return app.endpoints.gateway.ws_url + (f"?{query}" if query else "")


def http_url(app: RunningApp) -> str:
    assert app.endpoints.gateway is not None
    return app.endpoints.gateway.http_url


async def publish(
    app: RunningApp, body: Any, *, key: str | None = None, expect: int = 200
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    if key is not None:
        headers["idempotency-key"] = key
    async with httpx.AsyncClient(base_url=http_url(app)) as http:
        response = await http.post("/api/publish", content=orjson.dumps(body), headers=headers)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


async def health(app: RunningApp) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=http_url(app)) as http:
        return (await http.get("/health")).json()  # type: ignore[no-any-return]


def marker(**data: Any) -> dict[str, Any]:
    return {"type": "notification", "data": {"mark": next(_marks), **data}}


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await ws.get_message())
    return message


async def until(
    ws: WebSocketConnection, found: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until a message `found` accepts; it and every message before it."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(timeout_s):
        while True:
            message = await receive(ws)
            seen.append(message)
            if found(message):
                return message, seen


def marked(mark: int) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message["type"] == "notification" and message["data"].get("mark") == mark


async def test_an_event_published_on_one_node_reaches_every_node_with_one_seq_and_epoch(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        three_nodes(tmp_path, redis_server) as apps,
        open_websocket_url(ws_url(apps[0])) as ws0,
        open_websocket_url(ws_url(apps[1])) as ws1,
        open_websocket_url(ws_url(apps[2])) as ws2,
    ):
        welcomes = [await receive(ws) for ws in (ws0, ws1, ws2)]
        assert [w["data"]["node"] for w in welcomes] == ["node0", "node1", "node2"]
        assert len({w["data"]["epoch"] for w in welcomes}) == 1
        event = marker(text="hello cluster")
        answer = await publish(apps[1], event)
        got = [(await until(ws, marked(event["data"]["mark"])))[0] for ws in (ws0, ws1, ws2)]
        assert {message["seq"] for message in got} == {answer["seq"]}
        assert all(message["data"] == event["data"] for message in got)
        # the seq is the cluster's: a later welcome anywhere starts from it
        async with open_websocket_url(ws_url(apps[2])) as late:
            data = (await receive(late))["data"]
            assert data["epoch"] == welcomes[0]["data"]["epoch"]
            assert data["last_seq"] >= answer["seq"]


async def test_the_cluster_polls_the_engine_once_per_interval_not_once_per_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    calls = Faults()
    calls.arm(FaultSpec(point="engine.method", action="delay", delay_s=0.0))
    interval_s = 0.2
    async with three_nodes(
        tmp_path, redis_server, faults=calls, poller={"intervals_s": {"system.status": interval_s}}
    ) as apps:
        await eventually(lambda: [app.health.poller_role for app in apps].count("leader") == 1)
        before, started = calls.point("engine.method").hits, trio.current_time()
        await trio.sleep(2.0)
        polled = calls.point("engine.method").hits - before
        expected = (trio.current_time() - started) / interval_s
        assert 0.5 * expected <= polled <= 1.5 * expected, (polled, expected)
        roles = sorted([(await health(app))["poller"] for app in apps])
        assert roles == ["leader", "standby", "standby"]
        leader = next(app for app in apps if app.health.poller_role == "leader")
        body = await health(leader)
        assert body["broker"] == {"kind": "redis", "connected": True, "held_back": False}
        assert body["node"] == leader.health.node_id and body["status"] == "healthy"


async def test_an_idempotent_retry_on_another_node_is_one_event(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        three_nodes(tmp_path, redis_server) as apps,
        open_websocket_url(ws_url(apps[2])) as ws,
    ):
        await receive(ws)
        batch = [marker(n=1), marker(n=2)]
        first = await publish(apps[0], batch, key="order-42")
        again = await publish(apps[1], batch, key="order-42")
        assert again == first and len(first["seqs"]) == 2
        third = marker(n=3)
        other = await publish(apps[1], [third], key="order-43")
        assert other["seqs"][0] > first["seqs"][1]
        _, seen = await until(ws, marked(third["data"]["mark"]))
        delivered = [m for m in seen if m["type"] == "notification" and "mark" in m["data"]]
        assert [m["data"]["n"] for m in delivered] == [1, 2, 3]


async def test_an_invalid_idempotency_key_is_refused_and_publishes_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        three_nodes(tmp_path, redis_server) as apps,
        open_websocket_url(ws_url(apps[0])) as ws,
    ):
        await receive(ws)
        refused = await publish(apps[0], marker(bad=True), key="x" * 129, expect=400)
        assert refused["error"] == "invalid_idempotency_key"
        fine = marker()
        await publish(apps[0], fine)
        _, seen = await until(ws, marked(fine["data"]["mark"]))
        assert not [m for m in seen if m["data"].get("bad")]


async def test_redis_back_empty_closes_clients_with_1012_and_they_resume_in_a_new_epoch(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with three_nodes(tmp_path, redis_server) as apps:
        async with open_websocket_url(ws_url(apps[1])) as ws:
            welcome = (await receive(ws))["data"]
            before = marker()
            await publish(apps[0], before)
            last, _ = await until(ws, marked(before["data"]["mark"]))
            redis_server.kill()
            notice, _ = await until(
                ws, lambda m: m["type"] == "connection_error" and "broker" in m["data"]
            )
            assert notice["seq"] is None and notice["data"]["broker"] == redis_server.url
            assert (await health(apps[1]))["status"] == "degraded"
            broker = {"kind": "redis", "connected": False, "held_back": False}
            assert (await health(apps[1]))["broker"] == broker
            refused = await publish(apps[0], marker(), expect=503)
            assert refused["error"] == "broker_unavailable"
            redis_server.launch()
            await redis_server.ready()
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1012
        # The node that closed this client is back; the others notice within a second or so.
        await eventually(lambda: all(app.health.broker_connected for app in apps))
        query = f"since={last['seq']}&epoch={welcome['epoch']}"
        async with open_websocket_url(ws_url(apps[2], query)) as ws:
            again = (await receive(ws))["data"]
            assert again["recovered"] is False and again["epoch"] != welcome["epoch"]
            after = marker()
            answer = await publish(apps[0], after)
            got, _ = await until(ws, marked(after["data"]["mark"]))
            assert got["seq"] == answer["seq"]
            statuses = [(await health(app))["status"] for app in apps]
            assert statuses == ["healthy"] * 3


async def test_redis_back_with_its_data_loses_nothing_and_closes_nobody(
    tmp_path: Path, start_redis: Callable[..., RedisServer]
) -> None:
    redis = start_redis(appendonly=True)
    async with three_nodes(tmp_path, redis) as apps:
        async with open_websocket_url(ws_url(apps[2], EVERY_TYPE)) as ws:
            epoch = (await receive(ws))["data"]["epoch"]
            first = [marker(part=1) for _ in range(5)]
            await publish(apps[0], first)
            redis.kill()
            await eventually(lambda: not apps[0].health.broker_connected)
            redis.launch()
            await redis.ready()
            await eventually(lambda: all(app.health.broker_connected for app in apps))
            second = [marker(part=2) for _ in range(5)]
            await publish(apps[1], second)
            _, seen = await until(ws, marked(second[-1]["data"]["mark"]))
            numbered = [m for m in seen if m["seq"] is not None and not m.get("snapshot")]
            seqs = [m["seq"] for m in numbered]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no gap, no repeat
            marks = [m["data"]["mark"] for m in numbered if "mark" in m["data"]]
            assert marks == [e["data"]["mark"] for e in first + second]
        async with open_websocket_url(ws_url(apps[0], f"since=0&epoch={epoch}")) as ws:
            assert (await receive(ws))["data"]["epoch"] == epoch


async def test_a_node_whose_clients_lag_leaves_the_rest_in_the_stream_and_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    pad = "x" * 4000
    async with engine(tmp_path) as rpc:
        configs = [
            node_config(tmp_path, i, redis_server.url, rpc.url, hub={"queue_size": 8})
            for i in range(2)
        ]
        async with cluster(configs) as (publisher, lagging):
            assert lagging.endpoints.gateway is not None
            port = lagging.endpoints.gateway.port
            readers = [await paused_client(port, f"/ws?{EVERY_TYPE}") for _ in range(4)]
            await eventually(lambda: b"sigma_clients_connected 4.0" in lagging.metrics.render())
            accepted: list[int] = []
            headers = {"authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(base_url=http_url(publisher)) as http:

                async def publish_batch() -> None:
                    body = orjson.dumps([marker(pad=pad) for _ in range(4)])
                    response = await http.post("/api/publish", content=body, headers=headers)
                    assert response.status_code == 200, response.text
                    accepted.extend(response.json()["seqs"])

                with trio.fail_after(30):
                    while not lagging.health.broker_held_back:
                        await publish_batch()
                for _ in range(10):  # published elsewhere while this node holds back
                    await publish_batch()
            # What the other node published since waits in the stream, not in this node's queues.
            assert (await health(lagging))["broker"] == {
                "kind": "redis",
                "connected": True,
                "held_back": True,
            }
            async with open_websocket_url(ws_url(lagging)) as late:
                assert (await receive(late))["data"]["last_seq"] < accepted[-1] - 30
            scrape = lagging.metrics.render()
            for rule in (b"lags_far_behind", b"paces_publishers"):  # nobody cut
                assert b'sigma_slow_client_disconnects_total{rule="%s"} 0.0' % rule in scrape
            assert b"sigma_hub_herd_lagging 1.0" in scrape
            # They read again: every accepted event arrives, in order, with no gap, no new epoch.
            results: dict[int, list[dict[str, Any]]] = {}

            async def resume(index: int) -> None:
                results[index] = await read_until(readers[index], accepted[-1])

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for index in range(len(readers)):
                        nursery.start_soon(resume, index)
            for messages in results.values():
                assert messages[0]["data"]["kind"] == "welcome"
                numbered = [
                    m for m in messages[1:] if m["seq"] is not None and not m.get("snapshot")
                ]
                seqs = [m["seq"] for m in numbered]
                assert seqs == list(range(seqs[0], accepted[-1] + 1))
                assert set(accepted) <= set(seqs)
            await eventually(lambda: not lagging.health.broker_held_back)
            for reader in readers:
                await reader.aclose()


async def test_sigma_check_waits_for_its_own_nodes_heartbeat_not_any_nodes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    silent = Faults()
    silent.arm(FaultSpec(point="heartbeat.tick", action="drop"))
    async with three_nodes(
        tmp_path, redis_server, node_faults=[Faults(), silent, Faults()]
    ) as apps:
        alive, mute = (
            await observe(ws_url(apps[0]), timeout_s=5.0, max_age_s=1.0),
            await observe(ws_url(apps[1]), timeout_s=5.0, max_age_s=1.0),
        )
    assert isinstance(alive, Welcomed) and alive.heartbeat is not None
    assert isinstance(mute, Welcomed) and mute.heartbeat is None  # node0's and node2's came
    assert assess(alive).status is Status.OK and assess(mute).status is Status.CRITICAL
