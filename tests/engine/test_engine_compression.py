"""Compression jobs end to end over HTTP: real files, real worker threads, hostile params."""

from __future__ import annotations

import bz2
import lzma
import os
import random
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import sigma.engine.compressor as compressor_module
import sigma.engine.workers as workers_module
from sigma.config import EngineConfig
from sigma.engine import EngineHandle, run_engine
from sigma.engine.compressor import ProgressCallback

DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.decompress,
    "lzma": lzma.decompress,
    "bz2": bz2.decompress,
}
FINISHED = {"done", "failed", "cancelled"}


class Rpc:
    """A JSON-RPC caller on one keep-alive httpx client."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url

    async def call(self, method: str, params: object = None) -> Any:
        body: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            body["params"] = params
        response = await self.client.post(self.url, json=body)
        assert response.status_code == 200
        return response.json()

    async def result(self, method: str, params: object = None) -> Any:
        reply = await self.call(method, params)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, method: str, params: object = None) -> Any:
        reply = await self.call(method, params)
        assert "result" not in reply, reply
        return reply["error"]

    async def wait_for(self, job_id: str, accept: Callable[[Any], bool]) -> Any:
        with trio.fail_after(10):
            while True:
                job = await self.result("compression.jobs.get", {"id": job_id})
                if accept(job):
                    return job
                await trio.sleep(0.01)

    async def wait_finished(self, job_id: str) -> Any:
        return await self.wait_for(job_id, lambda job: job["state"] in FINISHED)


StartEngine = Callable[..., Awaitable[Rpc]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    return directory


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(b"not yours")
    return directory


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture
def start_engine(nursery: trio.Nursery, data_dir: Path, client: httpx.AsyncClient) -> StartEngine:
    async def start(**overrides: Any) -> Rpc:
        config = EngineConfig(port=0, data_dir=data_dir, **overrides)
        handle: EngineHandle = await nursery.start(run_engine, config)
        return Rpc(client, handle.url)

    return start


@pytest.fixture
async def rpc(start_engine: StartEngine) -> Rpc:
    return await start_engine()


@pytest.fixture
def held_after_first_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job reports its first chunk, then waits until it is cancelled (or 10 s pass)."""
    real_compress_file = compressor_module.compress_file

    def compress_file(
        source: Path,
        destination: Path,
        *,
        cancel: threading.Event,
        on_progress: ProgressCallback,
        **options: Any,
    ) -> int:
        def report_then_hold(bytes_in: int, bytes_out: int) -> None:
            on_progress(bytes_in, bytes_out)
            cancel.wait(timeout=10)

        return real_compress_file(
            source, destination, cancel=cancel, on_progress=report_then_hold, **options
        )

    monkeypatch.setattr(workers_module, "compress_file", compress_file)


def sample_bytes(size: int, seed: int = 1) -> bytes:
    noise = random.Random(seed).randbytes(size // 3)
    return (noise + b"sigma engine " * size)[:size]


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def assert_iso_with_offset(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None
    return moment


@pytest.mark.parametrize("algorithm", ["zlib", "lzma", "bz2"])
async def test_a_job_compresses_the_file_in_chunks(
    start_engine: StartEngine,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    algorithm: str,
) -> None:
    monkeypatch.setattr(compressor_module, "CHUNK_BYTES", 16 * 1024)
    original = sample_bytes(300_000)
    (data_dir / "docs").mkdir()
    (data_dir / "docs" / "report.txt").write_bytes(original)
    rpc = await start_engine()

    submitted = await rpc.result(
        "compression.jobs.submit", {"path": "docs/report.txt", "algorithm": algorithm, "level": 1}
    )
    assert submitted["state"] in {"queued", "running"}
    assert submitted["size_bytes"] == len(original)
    job = await rpc.wait_finished(submitted["id"])

    assert job["state"] == "done", job
    assert job["output"] == f"compressed/report.txt.{job['id']}.{job['output'].rsplit('.', 1)[1]}"
    output = (data_dir / job["output"]).read_bytes()
    assert DECOMPRESS[algorithm](output) == original
    assert (job["bytes_in"], job["bytes_out"], job["percent"]) == (len(original), len(output), 100)
    assert job["ratio"] == round(len(output) / len(original), 4)
    assert job["error"] is None
    assert job["worker"] in {"worker-1", "worker-2"}
    created, started, finished = (
        assert_iso_with_offset(job[key]) for key in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert sorted(os.listdir(data_dir / "compressed")) == [job["output"].split("/")[1]]
    agents = (await rpc.result("agents.list"))["agents"]
    assert sum(agent["jobs_done"] for agent in agents) == 1


async def test_submit_by_position_with_the_default_level(rpc: Rpc, data_dir: Path) -> None:
    (data_dir / "f.txt").write_bytes(b"abc" * 1000)
    job = await rpc.result("compression.jobs.submit", ["f.txt", "bz2"])
    assert (job["algorithm"], job["level"]) == ("bz2", 9)
    assert (await rpc.wait_finished(job["id"]))["state"] == "done"


async def test_a_symlink_inside_the_data_dir_is_followed(rpc: Rpc, data_dir: Path) -> None:
    (data_dir / "real.txt").write_bytes(b"content" * 100)
    (data_dir / "alias.txt").symlink_to(data_dir / "real.txt")
    job = await rpc.result("compression.jobs.submit", {"path": "alias.txt", "algorithm": "zlib"})
    done = await rpc.wait_finished(job["id"])
    assert zlib.decompress((data_dir / done["output"]).read_bytes()) == b"content" * 100


HOSTILE_SUBMITS: list[tuple[dict[str, object], str]] = [
    ({"path": "../outside/secret.txt", "algorithm": "zlib"}, "path: must not contain '..'"),
    ({"path": "a/../../x", "algorithm": "zlib"}, "path: must not contain '..'"),
    ({"path": "/etc/passwd", "algorithm": "zlib"}, "path: must be relative"),
    ({"path": "escape.txt", "algorithm": "zlib"}, "path: resolves outside the data directory"),
    ({"path": "escape_dir/secret.txt", "algorithm": "lzma"}, "path: resolves outside"),
    ({"path": "missing.txt", "algorithm": "zlib"}, "path: no such file"),
    ({"path": "subdir", "algorithm": "zlib"}, "path: is a directory"),
    ({"path": "", "algorithm": "zlib"}, "path: String should have at least 1 character"),
    ({"path": 7, "algorithm": "zlib"}, "path: Input should be a valid string"),
    ({"algorithm": "zlib"}, "path: Field required"),
    ({"path": "ok.txt", "algorithm": "gzip"}, "algorithm: Input should be 'zlib', 'lzma' or 'bz2'"),
    ({"path": "ok.txt"}, "algorithm: Field required"),
    ({"path": "ok.txt", "algorithm": "zlib", "level": 10}, "level: must be between 0 and 9"),
    ({"path": "ok.txt", "algorithm": "bz2", "level": 0}, "level: must be between 1 and 9 for bz2"),
    ({"path": "ok.txt", "algorithm": "lzma", "level": -1}, "level: must be between 0 and 9"),
    ({"path": "ok.txt", "algorithm": "zlib", "level": 10**40}, "level: "),
    ({"path": "ok.txt", "algorithm": "zlib", "level": "5"}, "level: Input should be a valid int"),
    ({"path": "ok.txt", "algorithm": "zlib", "level": 5.0}, "level: Input should be a valid int"),
    ({"path": "ok.txt", "algorithm": "zlib", "level": True}, "level: Input should be a valid int"),
    ({"path": "ok.txt", "algorithm": "zlib", "owner": "me"}, "owner: Extra inputs"),
]


@pytest.mark.parametrize(("params", "message"), HOSTILE_SUBMITS)
async def test_hostile_submit_is_invalid_params_and_writes_nothing(
    rpc: Rpc,
    data_dir: Path,
    outside: Path,
    tmp_path: Path,
    params: dict[str, object],
    message: str,
) -> None:
    (data_dir / "ok.txt").write_bytes(b"fine")
    (data_dir / "subdir").mkdir()
    (data_dir / "escape.txt").symlink_to(outside / "secret.txt")
    (data_dir / "escape_dir").symlink_to(outside)
    before = tree(tmp_path)

    error = await rpc.error("compression.jobs.submit", params)

    assert error["code"] == -32602
    assert error["message"].startswith(message), error
    assert (await rpc.result("compression.jobs.list"))["total"] == 0
    assert tree(tmp_path) == before


async def test_an_output_dir_symlinked_outside_fails_the_job_and_writes_nothing_there(
    rpc: Rpc, data_dir: Path, outside: Path
) -> None:
    (data_dir / "f.txt").write_bytes(b"data" * 1000)
    (data_dir / "compressed").symlink_to(outside)
    job = await rpc.result("compression.jobs.submit", {"path": "f.txt", "algorithm": "zlib"})
    failed = await rpc.wait_finished(job["id"])
    assert failed["state"] == "failed"
    assert failed["error"] == "path: compressed/ resolves outside the data directory"
    assert failed["output"] is None
    assert os.listdir(outside) == ["secret.txt"]


async def test_cancel_of_a_running_job_leaves_no_output(
    rpc: Rpc, data_dir: Path, held_after_first_chunk: None
) -> None:
    (data_dir / "big.bin").write_bytes(sample_bytes(1024 * 1024))
    job = await rpc.result("compression.jobs.submit", {"path": "big.bin", "algorithm": "lzma"})
    running = await rpc.wait_for(job["id"], lambda job: job["bytes_in"] > 0)
    assert running["state"] == "running"
    assert 0 < running["percent"] < 100
    busy = [agent for agent in (await rpc.result("agents.list"))["agents"] if agent["current_job"]]
    assert [(agent["state"], agent["current_job"]) for agent in busy] == [("busy", job["id"])]

    cancelled = await rpc.result("compression.jobs.cancel", {"id": job["id"]})

    assert cancelled["state"] == "cancelled"
    assert cancelled["output"] is None
    assert cancelled["finished_at"] is not None
    assert os.listdir(data_dir / "compressed") == []
    assert (await rpc.result("compression.jobs.get", [job["id"]]))["state"] == "cancelled"
    agents = (await rpc.result("agents.list"))["agents"]
    assert all(agent["state"] == "idle" for agent in agents)
    assert sum(agent["jobs_done"] for agent in agents) == 1


async def test_cancel_of_a_queued_job_and_a_file_gone_before_its_turn(
    start_engine: StartEngine, data_dir: Path, held_after_first_chunk: None
) -> None:
    for name in ("first.bin", "second.bin", "third.bin"):
        (data_dir / name).write_bytes(sample_bytes(600_000))
    rpc = await start_engine(workers=1)
    first = await rpc.result("compression.jobs.submit", ["first.bin", "zlib"])
    await rpc.wait_for(first["id"], lambda job: job["state"] == "running")
    second = await rpc.result("compression.jobs.submit", ["second.bin", "zlib"])
    third = await rpc.result("compression.jobs.submit", ["third.bin", "zlib"])
    assert second["state"] == "queued"

    cancelled = await rpc.result("compression.jobs.cancel", [second["id"]])
    assert (cancelled["state"], cancelled["started_at"], cancelled["worker"]) == (
        "cancelled",
        None,
        None,
    )
    (data_dir / "third.bin").unlink()
    assert (await rpc.result("compression.jobs.cancel", [first["id"]]))["state"] == "cancelled"
    failed = await rpc.wait_finished(third["id"])
    assert (failed["state"], failed["error"]) == (
        "failed",
        "path: no such file in the data directory",
    )
    assert os.listdir(data_dir / "compressed") == []


async def test_stopping_the_engine_stops_running_jobs_and_cleans_up(
    client: httpx.AsyncClient, data_dir: Path, held_after_first_chunk: None
) -> None:
    (data_dir / "big.bin").write_bytes(sample_bytes(1024 * 1024))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_engine, EngineConfig(port=0, data_dir=data_dir))
            rpc = Rpc(client, handle.url)
            job = await rpc.result("compression.jobs.submit", ["big.bin", "bz2", 1])
            await rpc.wait_for(job["id"], lambda job: job["bytes_in"] > 0)
            nursery.cancel_scope.cancel()
    assert os.listdir(data_dir / "compressed") == []


async def test_unknown_job_id_is_an_application_error(rpc: Rpc) -> None:
    for method in ("compression.jobs.get", "compression.jobs.cancel"):
        error = await rpc.error(method, {"id": "no-such-job"})
        assert error == {"code": -32001, "message": "Job not found", "data": {"id": "no-such-job"}}
    error = await rpc.error("compression.jobs.get", {"id": ""})
    assert error["code"] == -32602


async def test_list_filters_limits_and_validates(rpc: Rpc, data_dir: Path) -> None:
    ids = []
    for number in range(3):
        (data_dir / f"f{number}.txt").write_bytes(b"x" * 1000)
        ids.append((await rpc.result("compression.jobs.submit", [f"f{number}.txt", "zlib"]))["id"])
    for job_id in ids:
        await rpc.wait_finished(job_id)

    everything = await rpc.result("compression.jobs.list")
    assert ([job["id"] for job in everything["jobs"]], everything["total"]) == (ids[::-1], 3)
    page = await rpc.result("compression.jobs.list", {"state": "done", "limit": 2})
    assert ([job["id"] for job in page["jobs"]], page["total"]) == (ids[:0:-1], 3)
    assert (await rpc.result("compression.jobs.list", {"state": "queued"}))["total"] == 0
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "5"}, {"state": "lost"}):
        assert (await rpc.error("compression.jobs.list", params))["code"] == -32602


async def test_cancel_of_a_finished_job_returns_it_unchanged(rpc: Rpc, data_dir: Path) -> None:
    (data_dir / "f.txt").write_bytes(b"x" * 1000)
    job = await rpc.result("compression.jobs.submit", ["f.txt", "lzma", 0])
    done = await rpc.wait_finished(job["id"])
    assert await rpc.result("compression.jobs.cancel", [job["id"]]) == done


async def test_only_max_jobs_retained_finished_jobs_are_kept(
    start_engine: StartEngine, data_dir: Path
) -> None:
    rpc = await start_engine(max_jobs_retained=2)
    (data_dir / "f.txt").write_bytes(b"x" * 100)
    ids = []
    for _ in range(4):
        ids.append((await rpc.result("compression.jobs.submit", ["f.txt", "zlib"]))["id"])
        await rpc.wait_finished(ids[-1])
    listed = await rpc.result("compression.jobs.list")
    assert ([job["id"] for job in listed["jobs"]], listed["total"]) == (ids[:1:-1], 2)
    assert (await rpc.error("compression.jobs.get", [ids[0]]))["code"] == -32001
