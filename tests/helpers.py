"""Shared test helpers: a real hub, sessions supervisor and gateway on 127.0.0.1, configs, and a
frame decoder. Imported by tests as `helpers` (pytest puts tests/ on the path)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from sigma.config import ApiConfig, Config, GatewayConfig, HeartbeatConfig, HubConfig
from sigma.faults import Faults
from sigma.gateway.run import GatewayHandle, run_gateway
from sigma.gateway.server import Gateway
from sigma.health import HealthBoard
from sigma.hub.actor import HubActor
from sigma.hub.frames import Frame
from sigma.hub.intake import HubIntake
from sigma.hub.loop import run_hub
from sigma.hub.messages import HubMessage
from sigma.hub.outbox import Outbox, OutboxClosed
from sigma.metrics import Metrics
from sigma.protocol.event_types import ALL_EVENT_TYPES
from sigma.supervision.supervisor import DynamicSupervisor
from sigma.testing.tree import BASE_SECTIONS

API_KEY = "test-key"
EVERY_TYPE = "types=" + ",".join(ALL_EVENT_TYPES)
"""The query that subscribes a client to every type, opt-in ones too, so it owns every seq."""


@dataclass
class Stack:
    """A running hub + sessions + gateway, with helpers to drive it like a backend would."""

    config: Config
    gateway: GatewayHandle
    sessions: DynamicSupervisor
    hub: HubActor
    hub_send: trio.MemorySendChannel[HubMessage]
    health: HealthBoard
    http: httpx.AsyncClient
    metrics: Metrics
    faults: Faults
    intake: HubIntake

    @property
    def ws_url(self) -> str:
        return self.gateway.ws_url

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any]) -> Any:
        response = await self.http.post(
            "/api/publish",
            content=orjson.dumps(events),
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 200, response.text
        return response.json()


def make_config(**sections: Any) -> Config:
    """A config for tests: free port, publish API on, pings effectively off unless asked."""
    base: dict[str, Any] = {
        "gateway": GatewayConfig(port=0),
        "api": ApiConfig(key=API_KEY),
        "heartbeat": HeartbeatConfig(ping_interval_s=3600.0),
        "hub": HubConfig(),
    }
    base.update(sections)
    return Config(**base)


def tree_config(
    tmp_path: Path, *layers: Mapping[str, Mapping[str, Any]], **overrides: Mapping[str, Any]
) -> Config:
    """The whole tree (`sigma.app.serve`) on free ports, with its engine's data in `tmp_path`,
    polling every few tenths of a second and beating every 0.5 s.

    Each of `layers`, then `overrides`, replaces keys section by section.
    """
    raw: dict[str, Any] = {
        "gateway": {"port": 0},
        "engine": {"port": 0, "data_dir": str(tmp_path / "data")},
        "poller": dict(BASE_SECTIONS["poller"]),  # the test kit's fast polling
        "heartbeat": {"interval_s": 0.5},
    }
    for layer in (*layers, overrides):
        for section, values in layer.items():
            raw[section] = {**raw.get(section, {}), **values}
    return Config.model_validate(raw)


OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA


def parse_server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames (RFC 6455 5.2): `(opcode, payload)` each, and the bytes of
    a last frame that is not complete (empty when the data ends on a frame boundary).

    The tests' own reader, so that no test leans on a library's private frame decoder.
    """
    frames: list[tuple[int, bytes]] = []
    at = 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        assert not second & 0x80, "a server frame is never masked"
        length, header = second & 0x7F, 2
        if length == 126:
            if len(data) - at < 4:
                break
            length, header = int.from_bytes(data[at + 2 : at + 4], "big"), 4
        elif length == 127:
            if len(data) - at < 10:
                break
            length, header = int.from_bytes(data[at + 2 : at + 10], "big"), 10
        if len(data) - at < header + length:
            break
        assert first & 0x80, "Sigma sends no fragmented frames"
        frames.append((first & 0x0F, data[at + header : at + header + length]))
        at += header + length
    return frames, data[at:]


async def paused_client(port: int, target: str = "/ws") -> trio.SocketStream:
    """A WebSocket client (small receive buffer) that sends its handshake and reads nothing
    until told to: its reader is paused."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target=target)))
    return stream


async def read_until(stream: trio.SocketStream, last_seq: int) -> list[dict[str, Any]]:
    """Resume reading: every message up to the event numbered `last_seq`."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(65536)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    messages: list[dict[str, Any]] = []
    while True:
        frames, rest = parse_server_frames(rest)
        for opcode, payload in frames:
            if opcode == OPCODE_TEXT:
                messages.append(orjson.loads(payload))
                if messages[-1]["seq"] == last_seq:
                    return messages
        rest += await stream.receive_some(65536)


class OutboxReader:
    """Plays an outbox's sender in tests: woken when the outbox hands frames over.

    No socket and no direct writer: everything the hub flushes waits for `receive_batch`.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._woken = trio.Event()
        outbox.attach(self._woken.set)

    async def receive_batch(self) -> list[Frame]:
        """Everything queued, once there is something; `OutboxClosed` once closed."""
        while True:
            batch = self.outbox.take_batch()
            if batch:
                await trio.lowlevel.checkpoint()
                return batch
            close = self.outbox.close_reason
            if close is not None:
                raise OutboxClosed(close)
            await self._woken.wait()
            self._woken = trio.Event()
            self.outbox.attach(self._woken.set)


def decode_frames(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    """The JSON messages in a run of server frames (as queued in an outbox)."""
    return decode_wire(b"".join(frame.data for frame in frames))


def decode_wire(data: bytes) -> list[dict[str, Any]]:
    """The JSON messages in server frames as they came off the wire (whole frames only)."""
    parsed, _rest = parse_server_frames(data)
    return [orjson.loads(payload) for opcode, payload in parsed if opcode == OPCODE_TEXT]


@asynccontextmanager
async def running_stack(
    config: Config | None = None,
    *,
    faults: Faults | None = None,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[Stack]:
    """Start the real hub, sessions supervisor and gateway; stop them on exit.

    `faults` (a fresh, disarmed registry when not given) reaches the hub and the gateway;
    `verify` is how `Stack.http` checks a TLS gateway's certificate (httpx's `verify`).
    """
    config = config or make_config()
    faults = faults or Faults(config.faults.points)
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](config.hub.inbox_size)
    intake = HubIntake(hub_send)
    health = HealthBoard()
    metrics = Metrics()
    metrics.attach_intake(intake)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(
            functools.partial(
                run_hub,
                heartbeat_interval_s=config.heartbeat.interval_s,
                metrics=metrics,
                faults=faults,
                intake=intake,
            ),
            hub_receive,
            config.hub,
        )
        sessions = await nursery.start(
            DynamicSupervisor("sessions", max_children=config.gateway.max_connections).run
        )
        gateway = await nursery.start(
            run_gateway,
            Gateway(config, hub_send, sessions, health, metrics, faults=faults, intake=intake),
        )
        async with httpx.AsyncClient(base_url=gateway.http_url, verify=verify) as http:
            yield Stack(
                config, gateway, sessions, hub, hub_send, health, http, metrics, faults, intake
            )
        nursery.cancel_scope.cancel()


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Wait until `predicate()` holds, checking every few milliseconds, failing after `timeout_s`.

    For state that has no event to wait on (a count of sessions, a list filled by other tasks).
    """
    with trio.fail_after(timeout_s):
        while True:
            if predicate():
                return
            await trio.sleep(0.005)


def needs_binary(name: str, *, package: str) -> pytest.MarkDecorator:
    """Skip a test, with a one-line reason, where the program `name` is not installed.

    Under `CI=true` the skip counts as a failure (see conftest): CI installs `package`.
    """
    return pytest.mark.skipif(
        shutil.which(name) is None,
        reason=f"needs {name} (apt-get install {package})",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A `redis-server` of the test's own, on a free port, its files in `directory`.

    `appendonly`: persist every write to an append-only file (fsync always), so that a restart
    after SIGKILL finds everything; otherwise nothing is saved and a restart comes back empty.
    Started and stopped by its pid, never by name.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def launch(self) -> None:
        """Start the server; `wait_ready` or `ready` says when it answers."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no", *persistence,
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def answers(self) -> bool:
        """True when the server answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the server answers PING (for fixtures, before trio runs)."""
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            assert self.process is not None and self.process.poll() is None, "redis-server died"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    async def ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the server answers PING, without blocking the other tasks."""
        with trio.fail_after(timeout_s):
            while not await trio.to_thread.run_sync(self.answers):  # noqa: ASYNC110 (a process)
                await trio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server and reap it: nothing it had not written to disk survives."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
