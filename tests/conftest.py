"""Shared test harness: a real hub, sessions supervisor and gateway on 127.0.0.1."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import trio

from sigma.actors.hub import HubActor, HubMessage, run_hub
from sigma.config import ApiConfig, Config, GatewayConfig, HeartbeatConfig, HubConfig
from sigma.gateway import GatewayHandle, run_gateway
from sigma.health import HealthBoard
from sigma.metrics import Metrics
from sigma.supervisor import DynamicSupervisor

API_KEY = "test-key"


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


@asynccontextmanager
async def running_stack(config: Config | None = None) -> AsyncIterator[Stack]:
    """Start the real hub, sessions supervisor and gateway; stop them on exit."""
    config = config or make_config()
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](config.hub.inbox_size)
    health = HealthBoard()
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(
            functools.partial(
                run_hub, heartbeat_interval_s=config.heartbeat.interval_s, metrics=metrics
            ),
            hub_receive,
            config.hub,
        )
        sessions = await nursery.start(
            DynamicSupervisor("sessions", max_children=config.gateway.max_connections).run
        )
        gateway = await nursery.start(run_gateway, config, hub_send, sessions, health, metrics)
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            yield Stack(config, gateway, sessions, hub, hub_send, health, http, metrics)
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
