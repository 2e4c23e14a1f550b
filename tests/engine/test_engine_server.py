"""The engine over real HTTP on 127.0.0.1: routing, keep-alive, errors and the host methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from structlog.testing import capture_logs

import sigma.engine.server as server_module
from sigma import __version__
from sigma.config import EngineConfig
from sigma.engine import EngineHandle, run_engine
from sigma.engine.methods import HostMethods
from sigma.engine.server import MAX_BODY_BYTES


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def engine(nursery: trio.Nursery, tmp_path: Path, data_dir: Path) -> EngineHandle:
    config = EngineConfig(port=0, data_dir=data_dir, storage_paths=(tmp_path, tmp_path / "missing"))
    handle: EngineHandle = await nursery.start(run_engine, config)
    return handle


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def call(
    client: httpx.AsyncClient, engine: EngineHandle, method: str, params: object = None
) -> Any:
    body: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    response = await client.post(engine.url, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def result_of(client: httpx.AsyncClient, engine: EngineHandle, method: str) -> Any:
    reply = await call(client, engine, method)
    assert "error" not in reply, reply
    return reply["result"]


def assert_iso_with_offset(text: str) -> None:
    assert datetime.fromisoformat(text).utcoffset() is not None


async def test_started_handle_names_a_real_port(engine: EngineHandle) -> None:
    assert engine.host == "127.0.0.1"
    assert engine.port > 0
    assert engine.url == f"http://127.0.0.1:{engine.port}/rpc"


async def test_data_dir_is_created(engine: EngineHandle, data_dir: Path) -> None:
    assert await trio.Path(data_dir).is_dir()


async def test_health(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    health = await result_of(client, engine, "health")
    assert health["status"] == "ok"
    assert health["version"] == __version__
    assert health["uptime_s"] >= 0


async def test_system_status(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    status = await result_of(client, engine, "system.status")
    assert set(status) == {
        "cpu_usage",
        "cpu_count",
        "memory",
        "disk",
        "load_average",
        "uptime_s",
        "process_count",
        "engine_rss_bytes",
    }
    assert 0 <= status["cpu_usage"] <= 100
    assert set(status["memory"]) == {"total", "used", "percent"}
    assert set(status["disk"]) == {"total", "used", "free", "percent"}
    assert status["disk"]["total"] > 0
    assert len(status["load_average"]) == 3
    assert status["uptime_s"] > 0
    assert status["process_count"] > 0
    assert status["engine_rss_bytes"] > 0


async def test_storage_status(
    client: httpx.AsyncClient, engine: EngineHandle, data_dir: Path, tmp_path: Path
) -> None:
    (data_dir / "sub").mkdir()
    (data_dir / "a.txt").write_bytes(b"x" * 100)
    (data_dir / "sub" / "b.txt").write_bytes(b"y" * 23)
    (data_dir / "link").symlink_to(data_dir / "a.txt")

    storage = await result_of(client, engine, "storage.status")

    assert (storage["file_count"], storage["file_bytes"]) == (2, 123)
    assert storage["data_dir"]["path"] == str(await trio.Path(data_dir).resolve())
    assert storage["data_dir"]["total"] > 0
    assert storage["data_dir"]["error"] is None
    existing, missing = storage["paths"]
    assert existing["path"] == str(tmp_path)
    assert existing["free"] > 0
    assert 0 <= existing["percent"] <= 100
    assert missing["path"] == str(tmp_path / "missing")
    assert missing["total"] is None
    assert missing["error"]


async def test_agents_list(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    agents = (await result_of(client, engine, "agents.list"))["agents"]
    assert [agent["id"] for agent in agents] == ["worker-1", "worker-2"]
    for agent in agents:
        assert (agent["state"], agent["current_job"], agent["jobs_done"]) == ("idle", None, 0)
        assert_iso_with_offset(agent["last_heartbeat"])


async def test_keep_alive_serves_two_requests_on_one_connection(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    first = await client.post(engine.url, json={"jsonrpc": "2.0", "method": "health", "id": 1})
    second = await client.post(engine.url, json={"jsonrpc": "2.0", "method": "health", "id": 2})
    assert [first.json()["id"], second.json()["id"]] == [1, 2]
    assert first.extensions["network_stream"] is second.extensions["network_stream"]


async def test_keep_alive_on_a_raw_socket(engine: EngineHandle) -> None:
    body = b'{"jsonrpc": "2.0", "method": "health", "id": 1}'
    head = (
        f"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(engine.host, engine.port)
    async with stream:
        await stream.send_all(head + body + head + body)
        received = b""
        with trio.fail_after(5):
            while received.count(b'"status":"ok"') < 2:
                received += await stream.receive_some()
    assert received.count(b"HTTP/1.1 200 OK") == 2


async def test_unknown_path_is_404(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    for method in ("GET", "POST"):
        response = await client.request(method, engine.url.replace("/rpc", "/nope"))
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_rpc_are_405(
    client: httpx.AsyncClient, engine: EngineHandle, method: str
) -> None:
    response = await client.request(method, engine.url)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


async def test_a_body_over_the_limit_is_413(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    response = await client.post(engine.url, content=b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "close" in response.headers["connection"]
    assert response.json()["error"] == "body_too_large"
    assert (await call(client, engine, "health"))["result"]["status"] == "ok"


async def test_a_body_that_is_not_json_is_a_parse_error_with_200(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    response = await client.post(engine.url, content=b"{not json")
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32700


async def test_notifications_get_200_with_an_empty_body(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    single = await client.post(engine.url, json={"jsonrpc": "2.0", "method": "health"})
    batch = await client.post(
        engine.url,
        json=[{"jsonrpc": "2.0", "method": "health"}, {"jsonrpc": "2.0", "method": "nope"}],
    )
    for response in (single, batch):
        assert (response.status_code, response.content) == (200, b"")


async def test_a_batch_over_http(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    response = await client.post(
        engine.url,
        json=[
            {"jsonrpc": "2.0", "method": "health", "id": "a"},
            {"jsonrpc": "2.0", "method": "agents.list"},
            {"jsonrpc": "2.0", "method": "health", "params": {"x": 1}, "id": "b"},
            {"jsonrpc": "2.0", "method": "storage.status", "params": [], "id": "c"},
            [],
        ],
    )
    replies = response.json()
    assert [reply["id"] for reply in replies] == ["a", "b", "c", None]
    assert replies[0]["result"]["status"] == "ok"
    assert replies[1]["error"] == {"code": -32602, "message": "x: Extra inputs are not permitted"}
    assert "file_count" in replies[2]["result"]
    assert replies[3]["error"]["code"] == -32600


async def test_standard_errors_over_http(client: httpx.AsyncClient, engine: EngineHandle) -> None:
    assert (await client.post(engine.url, content=b"[")).json()["error"]["code"] == -32700
    assert (await client.post(engine.url, json=[])).json()["error"]["code"] == -32600
    assert (await call(client, engine, "no.such"))["error"]["code"] == -32601
    assert (await call(client, engine, "health", [1]))["error"]["code"] == -32602


async def test_internal_error_over_http_carries_no_trace(
    client: httpx.AsyncClient, engine: EngineHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: HostMethods) -> None:
        raise RuntimeError("psutil exploded at /secret/place")

    monkeypatch.setattr(HostMethods, "_sample_system", broken)
    with capture_logs() as logs:
        response = await client.post(
            engine.url, json={"jsonrpc": "2.0", "method": "system.status", "id": 3}
        )
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32603, "message": "Internal error"},
    }
    assert b"secret" not in response.content and b"Traceback" not in response.content
    assert [entry["method"] for entry in logs if entry["log_level"] == "error"] == ["system.status"]


async def test_a_crashing_connection_gets_500_and_the_server_goes_on(
    client: httpx.AsyncClient, engine: EngineHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(registry: object, body: bytes) -> bytes:
        raise RuntimeError("bug in the server")

    monkeypatch.setattr(server_module, "dispatch", crash)
    with capture_logs() as logs:
        response = await client.post(engine.url, json={"jsonrpc": "2.0", "method": "health"})
    assert response.status_code == 500
    assert "close" in response.headers["connection"]
    assert response.json()["error"] == "internal_error"
    assert b"bug in the server" not in response.content
    assert any(entry["event"] == "Engine connection handler failed" for entry in logs)

    monkeypatch.undo()
    assert (await call(client, engine, "health"))["result"]["status"] == "ok"


async def test_malformed_http_is_400_and_the_server_goes_on(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    stream = await trio.open_tcp_stream(engine.host, engine.port)
    async with stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(received.split(b"\r\n\r\n", 1)[1])["error"] == "bad_request"
    assert (await call(client, engine, "health"))["result"]["status"] == "ok"


async def test_a_peer_vanishing_mid_request_harms_no_one(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    stream = await trio.open_tcp_stream(engine.host, engine.port)
    await stream.send_all(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await stream.aclose()
    assert (await call(client, engine, "health"))["result"]["status"] == "ok"


async def test_discover_lists_every_method_the_engine_answers(
    client: httpx.AsyncClient, engine: EngineHandle
) -> None:
    document = await result_of(client, engine, "rpc.discover")
    names = {method["name"] for method in document["methods"]}
    assert names == {
        "system.status",
        "storage.status",
        "health",
        "agents.list",
        "compression.jobs.submit",
        "compression.jobs.list",
        "compression.jobs.get",
        "compression.jobs.cancel",
        "rpc.discover",
    }
    needs_params = {"compression.jobs.submit", "compression.jobs.get", "compression.jobs.cancel"}
    for name in names:
        reply = await call(client, engine, name)
        if name in needs_params:
            assert reply["error"]["code"] == -32602
        else:
            assert "result" in reply


async def test_the_engine_stops_when_cancelled(tmp_path: Path) -> None:
    config = EngineConfig(port=0, data_dir=tmp_path / "data")
    async with trio.open_nursery() as nursery:
        handle: EngineHandle = await nursery.start(run_engine, config)
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream(handle.host, handle.port)


async def test_a_taken_port_fails_before_started(tmp_path: Path, engine: EngineHandle) -> None:
    config = EngineConfig(port=engine.port, data_dir=tmp_path / "other")
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError):
            await nursery.start(run_engine, config)
