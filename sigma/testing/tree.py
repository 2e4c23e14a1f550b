"""`run_tree`: the whole Sigma tree (`sigma.app.serve`) in this process, on free ports.

    async with run_tree(test_config(tmp_path, hub={"queue_size": 64})) as tree:
        await tree.follow(ledger, count=10)        # 10 clients, each checked by the ledger
        async with tree.load(batch=5, period_s=0.05):
            tree.faults.arm(FaultSpec(point="poller.call", action="raise", once=True))
            await tree.supervision.restarted("poller")
        await ledger.wait_caught_up(await tree.publish_marker())
        ledger.assert_clean()

`test_config()` is a configuration made for such tests: free ports, the engine's data in a
directory of the test's, the publish API on (key `TEST_API_KEY`), fast polling and heartbeats,
and a restart budget loose enough for many injected crashes. Each keyword replaces keys of one
section (`hub={"queue_size": 8}`; nested tables such as `supervisor={"backoff": {...}}` merge).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

import sigma.client
from sigma.app.serving import RunningApp, serve
from sigma.backoff import FullJitter
from sigma.client import Reconnect, Stream
from sigma.config.loading import Config
from sigma.faults import Faults
from sigma.testing.ledger import DeliveryLedger
from sigma.testing.load import Publisher, publish
from sigma.testing.supervision import SupervisionWatch

TEST_API_KEY = "sigma-test-key"
FAST_RECONNECT = Reconnect(backoff=FullJitter(min_s=0.01, max_s=0.05))
"""How test clients reconnect: at once, give or take a few milliseconds of jitter."""
SUPERVISION_BUFFER = 100_000
LOAD_STOP_S = 35.0
"""Longest wait for the load's last publish when its block ends (a publish times out at 30 s)."""

BASE_SECTIONS: dict[str, dict[str, Any]] = {
    "gateway": {"host": "127.0.0.1", "port": 0},
    "engine": {"port": 0},
    "api": {"key": TEST_API_KEY},
    "poller": {
        "timeout_s": 1.0,
        "retry_min_s": 0.05,
        "retry_max_s": 0.2,
        "intervals_s": {
            "system.status": 0.3,
            "storage.status": 0.5,
            "agents.list": 0.3,
            "compression.jobs.list": 0.1,
        },
    },
    "heartbeat": {"interval_s": 0.1, "ping_interval_s": 3600.0},
    "supervisor": {
        "max_restarts": 10_000,
        "max_seconds": 10.0,
        "backoff": {"min_s": 0.01, "max_s": 0.05, "reset_after_s": 0.5},
    },
}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, nested tables merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_sections(data_dir: Path, **overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The raw sections of `test_config` (what a `sigma serve` config file would hold)."""
    base = merge(BASE_SECTIONS, {"engine": {"data_dir": str(data_dir)}})
    return merge(base, overrides)


def test_config(data_dir: Path, **overrides: Mapping[str, Any]) -> Config:
    """A `Config` for tests; see the module docstring. Bad overrides raise pydantic's error."""
    return Config.model_validate(test_sections(data_dir, **overrides))


test_config.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name
test_sections.__test__ = False  # type: ignore[attr-defined]


@dataclass
class SigmaTree:
    """A running tree: its app, addresses, fault registry, supervision events and an HTTP client."""

    app: RunningApp
    config: Config
    http: httpx.AsyncClient
    supervision: SupervisionWatch
    api_key: str
    _nursery: trio.Nursery

    @property
    def faults(self) -> Faults:
        """The tree's fault registry: `arm(FaultSpec(...))`, `clear()`."""
        return self.app.faults

    @property
    def ws_url(self) -> str:
        """The gateway's WebSocket URL."""
        assert self.app.endpoints.gateway is not None
        return self.app.endpoints.gateway.ws_url

    @property
    def http_url(self) -> str:
        """The gateway's HTTP base URL."""
        assert self.app.endpoints.gateway is not None
        return self.app.endpoints.gateway.http_url

    def restarts(self, child_id: str) -> int:
        """How often the root supervisor has restarted `child_id`."""
        return next(c.restarts for c in self.app.root.which_children() if c.id == child_id)

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
        """Publish events through the API; returns their seqs."""
        return await publish(self.http, self.api_key, events)

    async def publish_marker(self) -> int:
        """Publish one notification and return its seq: what `wait_caught_up` waits for."""
        (seq,) = await self.publish({"type": "notification", "data": {"kind": "marker"}})
        return seq

    def connect(self, **options: Any) -> Any:
        """`sigma.client.connect` to this tree; fast reconnects unless `reconnect=` says else."""
        options.setdefault("reconnect", FAST_RECONNECT)
        return sigma.client.connect(self.ws_url, **options)

    async def follow(
        self, ledger: DeliveryLedger, *, count: int = 1, **options: Any
    ) -> list[Stream]:
        """Start `count` clients in the background, each recorded by `ledger`; return once each
        was welcomed. They run until the tree stops. `options` go to `connect()`."""
        options.setdefault("connection_items", True)
        streams: list[Stream] = []
        for _ in range(count):
            streams.append(await self._nursery.start(self._follow, ledger, options))
        return streams

    async def _follow(
        self,
        ledger: DeliveryLedger,
        options: dict[str, Any],
        *,
        task_status: trio.TaskStatus[Stream] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with self.connect(**options) as stream:
            task_status.started(stream)
            await ledger.follow(stream)

    @asynccontextmanager
    async def load(self, *, batch: int = 5, period_s: float = 0.05) -> AsyncIterator[Publisher]:
        """Publish `batch` events every `period_s` for the duration of the block."""
        publisher = Publisher(self.http, self.api_key, batch=batch, period_s=period_s)
        stop = trio.Event()
        done = trio.Event()

        async def run() -> None:
            try:
                await publisher.run(stop)
            finally:
                done.set()

        self._nursery.start_soon(run)
        try:
            yield publisher
        finally:
            stop.set()
            with trio.CancelScope(shield=True), trio.move_on_after(LOAD_STOP_S):
                await done.wait()


@asynccontextmanager
async def run_tree(config: Config, *, faults: Faults | None = None) -> AsyncIterator[SigmaTree]:
    """Run the tree for the duration of the block; stop it (and its test clients) on exit.

    `faults`: the registry the tree's fault points use (a fresh one when None).
    Error handling: a tree that fails to start raises what stopped it.
    """
    faults = faults or Faults(config.faults.points)
    async with trio.open_nursery() as nursery:
        app: RunningApp = await nursery.start(functools.partial(serve, config, faults=faults))
        watch = SupervisionWatch(app.supervision.subscribe(SUPERVISION_BUFFER))
        assert app.endpoints.gateway is not None
        api_key = config.api.key or ""
        async with (
            httpx.AsyncClient(base_url=app.endpoints.gateway.http_url, trust_env=False) as http,
            trio.open_nursery() as clients,
        ):
            yield SigmaTree(app, config, http, watch, api_key, clients)
            clients.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
