"""`run_process`: `sigma serve` as a subprocess, with its fault points armed over HTTP.

    async with run_process(tmp_path, heartbeat={"interval_s": 0.2}) as server:
        await server.faults.arm(FaultSpec(point="hub.publish", action="raise", once=True))
        ...
        assert await server.stop() == 0      # SIGTERM, then its exit status

The configuration is `sigma.testing.tree.test_sections` with the overrides, a free port chosen
up front (so the URL is known before the server listens) and `[faults] admin = true`, written to
`sigma.toml` in the given directory; the server's log goes to `serve.log` beside it.

Resource handling: the process is stopped on exit (SIGTERM, then SIGKILL after
`STOP_TIMEOUT_S`), by its own handle, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tomli_w
import trio

from sigma.faults import FaultSpec
from sigma.testing.load import publish
from sigma.testing.tree import TEST_API_KEY, test_sections

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
READY_LINE = b"Sigma running"
PORT_TAKEN = b"Address already in use"
START_ATTEMPTS = 3


class ServerFailed(AssertionError):
    """`sigma serve` exited, or did not become ready, when a test needed it; says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class RemoteFaults:
    """The fault points of a `sigma serve` process, through `POST/DELETE /admin/faults`."""

    http: httpx.AsyncClient

    async def arm(self, spec: FaultSpec) -> str:
        """Arm a point; returns the server's description of what was armed."""
        response = await self.http.post(
            "/admin/faults", content=spec.model_dump_json(exclude_none=True)
        )
        if response.status_code != 200:
            raise ServerFailed(
                f"arming {spec.point} answered {response.status_code}: {response.text}"
            )
        return str(response.json().get("description", ""))

    async def clear(self) -> None:
        """Disarm every point."""
        response = await self.http.delete("/admin/faults")
        if response.status_code not in (200, 204):
            raise ServerFailed(f"clearing faults answered {response.status_code}: {response.text}")

    async def points(self) -> list[dict[str, Any]]:
        """Every point with its state and counters (`hits`, `fired`), as the server reports."""
        body = (await self.http.get("/admin/faults")).json()
        return list(body["points"])


@dataclass
class SigmaProcess:
    """A running `sigma serve`: its process, addresses, log and fault points."""

    process: trio.Process
    port: int
    config_path: Path
    log_path: Path
    http: httpx.AsyncClient
    faults: RemoteFaults
    api_key: str

    @property
    def ws_url(self) -> str:
        """The gateway's WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The gateway's HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
        """Publish events through the API; returns their seqs."""
        return await publish(self.http, self.api_key, events)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait for the exit (SIGKILL past `timeout_s`); returns the exit status."""
        return await _terminate(self.process, timeout_s)


async def _wait_ready(process: trio.Process, log_path: Path, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        # The log is a file (a pipe nobody reads would fill and stall the server), so there is
        # nothing to wait on but the file itself.
        while READY_LINE not in await trio.Path(log_path).read_bytes():
            if process.returncode is not None:
                break
            await trio.sleep(0.02)
        else:
            return
    tail = (await trio.Path(log_path).read_text(errors="replace"))[-2000:]
    state = f"exited with {process.returncode}" if process.returncode is not None else "not ready"
    raise ServerFailed(f"sigma serve {state} within {timeout_s:g}s; its log ends:\n{tail}")


@asynccontextmanager
async def run_process(
    directory: Path, *, start_timeout_s: float = START_TIMEOUT_S, **overrides: Mapping[str, Any]
) -> AsyncIterator[SigmaProcess]:
    """Start `sigma serve` with the test configuration and `overrides`; stop it on exit.

    The port is picked free and then released for the server to bind, so another process may
    take it in between: the server then exits at start, and is started again on a newly picked
    port (up to `START_ATTEMPTS` times in all).
    """
    await trio.Path(directory).mkdir(parents=True, exist_ok=True)
    config_path = directory / "sigma.toml"
    log_path = directory / "serve.log"
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        sections = test_sections(
            directory / "data",
            **{**overrides, "gateway": {"port": port, **overrides.get("gateway", {})}},
        )
        sections = {**sections, "faults": {"admin": True, **sections.get("faults", {})}}
        await trio.Path(config_path).write_text(tomli_w.dumps(sections))
        process = await _start(config_path, log_path)
        try:
            await _wait_ready(process, log_path, start_timeout_s)
            break
        except ServerFailed:
            await _stop(process)
            taken = PORT_TAKEN in await trio.Path(log_path).read_bytes()
            if not taken or attempt == START_ATTEMPTS:
                raise
    try:
        api_key = str(sections.get("api", {}).get("key", TEST_API_KEY))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            yield SigmaProcess(
                process, port, config_path, log_path, http, RemoteFaults(http), api_key
            )
    finally:
        await _stop(process)


async def _start(config_path: Path, log_path: Path) -> trio.Process:
    with log_path.open("wb") as log:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "sigma", "serve", "--config", str(config_path)],
            stderr=log,
            stdout=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def _stop(process: trio.Process) -> None:
    """`_terminate` with `STOP_TIMEOUT_S`, shielded, so that it runs to the end."""
    with trio.CancelScope(shield=True):
        await _terminate(process, STOP_TIMEOUT_S)


async def _terminate(process: trio.Process, timeout_s: float) -> int:
    """SIGTERM, wait for the exit (SIGKILL past `timeout_s`); returns the exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            await process.wait()
        if process.returncode is None:
            process.kill()
    return await process.wait()
