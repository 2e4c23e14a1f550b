"""The poller leader dies by SIGKILL: another node polls within two leases, and a client of the
dead node resumes on another with no gap and no duplicate while events keep flowing.

Nodes are `sigma serve` subprocesses (SIGKILL needs a process of its own), sharing one engine
started here and one redis-server of the test's own.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from helpers import API_KEY, EVERY_TYPE, RedisServer, free_port, needs_binary
from trio_websocket import ConnectionClosed, open_websocket_url

from sigma.config import EngineConfig
from sigma.engine.server import EngineHandle, run_engine

pytestmark = needs_binary("redis-server", package="redis-server")

LEASE_S = 1.0
NODES = 3


def node_toml(port: int, node_id: str, redis_url: str, engine_url: str) -> str:
    return f"""
[gateway]
port = {port}
[engine]
embedded = false
url = "{engine_url}"
[poller]
retry_min_s = 0.05
retry_max_s = 0.2
[poller.intervals_s]
"system.status" = 0.2
[heartbeat]
interval_s = 0.5
[api]
key = "{API_KEY}"
[broker]
kind = "redis"
url = "{redis_url}"
lease_s = {LEASE_S}
node_id = "{node_id}"
[logging]
level = "warning"
"""


@contextmanager
def nodes(tmp_path: Path, redis_url: str, engine_url: str) -> Iterator[list[tuple[int, Any]]]:
    """Start the nodes; yields (port, process) pairs; stops each by its pid at the end."""
    started: list[tuple[int, subprocess.Popen[bytes]]] = []
    try:
        for index in range(NODES):
            port = free_port()
            config = tmp_path / f"node{index}.toml"
            config.write_text(node_toml(port, f"node{index}", redis_url, engine_url))
            log = (tmp_path / f"node{index}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "sigma", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            started.append((port, process))
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for _, process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


async def health_of(http: httpx.AsyncClient, port: int) -> dict[str, Any] | None:
    try:
        response = await http.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
    except httpx.HTTPError:
        return None
    return response.json()  # type: ignore[no-any-return]


async def leader_among(http: httpx.AsyncClient, ports: list[int]) -> int | None:
    for port in ports:
        body = await health_of(http, port)
        if body is not None and body["poller"] == "leader":
            return port
    return None


async def test_sigkilled_leader_is_replaced_and_its_client_resumes_elsewhere_losing_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        engine: EngineHandle = await nursery.start(
            functools.partial(run_engine), EngineConfig(port=0, data_dir=tmp_path / "engine")
        )
        with nodes(tmp_path, redis_server.url, engine.url) as running:
            ports = [port for port, _ in running]
            with trio.fail_after(30):
                while None in [await health_of(http, port) for port in ports] or (  # noqa: ASYNC110
                    await leader_among(http, ports) is None
                ):
                    await trio.sleep(0.1)
            leader = await leader_among(http, ports)
            assert leader is not None
            survivors = [port for port in ports if port != leader]
            published: list[int] = []

            async def keep_publishing() -> None:
                for n in range(10_000):
                    port = survivors[n % len(survivors)]
                    response = await http.post(
                        f"http://127.0.0.1:{port}/api/publish",
                        content=orjson.dumps({"type": "notification", "data": {"n": n}}),
                        headers={"authorization": f"Bearer {API_KEY}"},
                    )
                    assert response.status_code == 200, response.text
                    published.append(response.json()["seq"])
                    await trio.sleep(0.01)

            seqs: list[int] = []
            async with open_websocket_url(f"ws://127.0.0.1:{leader}/ws?{EVERY_TYPE}") as ws:
                epoch = orjson.loads(await ws.get_message())["data"]["epoch"]
                nursery.start_soon(keep_publishing)
                while len(seqs) < 30:
                    message = orjson.loads(await ws.get_message())
                    if not message.get("snapshot"):  # state on join: history, not news
                        seqs.append(message["seq"])
                process = next(p for port, p in running if port == leader)
                os.kill(process.pid, signal.SIGKILL)
                killed_at = trio.current_time()
                try:
                    with trio.fail_after(10):
                        while True:
                            message = orjson.loads(await ws.get_message())
                            if message["seq"] is not None:
                                seqs.append(message["seq"])
                except ConnectionClosed:
                    pass
            with trio.fail_after(2 * LEASE_S + 1.0):
                while (new_leader := await leader_among(http, survivors)) is None:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            took_s = trio.current_time() - killed_at
            assert took_s <= 2 * LEASE_S + 0.5, took_s
            query = f"since={seqs[-1]}&epoch={epoch}&{EVERY_TYPE}"
            async with open_websocket_url(f"ws://127.0.0.1:{survivors[0]}/ws?{query}") as ws:
                welcome = orjson.loads(await ws.get_message())["data"]
                assert welcome["recovered"] is True and welcome["epoch"] == epoch
                resumed_at = len(seqs)
                polled_after = False
                with trio.fail_after(10):
                    while len(seqs) < resumed_at + 60 or not polled_after:
                        message = orjson.loads(await ws.get_message())
                        seqs.append(message["seq"])
                        polled_after |= message["type"] == "system_status"
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat"
            assert set(published[: len(published) // 2]) <= set(range(seqs[0], seqs[-1] + 1))
            assert new_leader in survivors
            nursery.cancel_scope.cancel()
