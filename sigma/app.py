"""The supervision tree of `sigma serve`, built from one `Config`.

Children of the root supervisor, started in this order and stopped in reverse:

    engine (when embedded) -> hub -> sessions (dynamic) -> gateway -> poller -> heartbeat

So on shutdown the producers stop first, then the gateway stops accepting, then every client
session closes with 1001, then the hub, then the engine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import structlog
import trio

from sigma.actors.heartbeat import run_heartbeat
from sigma.actors.hub import HubMessage, run_hub
from sigma.actors.rpc_poller import run_poller
from sigma.config import Config
from sigma.engine.server import EngineHandle, run_engine
from sigma.gateway import GatewayHandle, run_gateway
from sigma.health import HealthBoard
from sigma.supervision_log import log_supervision_events
from sigma.supervisor import (
    ChildSpec,
    DynamicSupervisor,
    SupervisionEvent,
    Supervisor,
    SupervisorPolicy,
)

log = structlog.get_logger("sigma.app")

SUPERVISION_EVENT_BUFFER = 1024


@dataclass
class Endpoints:
    """Where the started parts listen; each is written once, by the part that listens."""

    gateway: GatewayHandle | None = None
    engine: EngineHandle | None = None
    engine_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningApp:
    """What `serve` hands its starter: the addresses, the tree and the health board."""

    endpoints: Endpoints
    root: Supervisor
    sessions: DynamicSupervisor
    health: HealthBoard
    hub: trio.MemorySendChannel[HubMessage]


async def _run_embedded_engine(
    config: Config,
    endpoints: Endpoints,
    *,
    task_status: trio.TaskStatus[EngineHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        handle: EngineHandle = await nursery.start(run_engine, config.engine)
        endpoints.engine = handle
        endpoints.engine_url = handle.url
        task_status.started(handle)


async def _run_gateway(
    config: Config,
    hub: trio.MemorySendChannel[HubMessage],
    sessions: DynamicSupervisor,
    health: HealthBoard,
    endpoints: Endpoints,
    *,
    task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        handle: GatewayHandle = await nursery.start(run_gateway, config, hub, sessions, health)
        endpoints.gateway = handle
        task_status.started(handle)


def build_tree(
    config: Config,
    *,
    health: HealthBoard,
    endpoints: Endpoints,
    hub_send: trio.MemorySendChannel[HubMessage],
    hub_receive: trio.MemoryReceiveChannel[HubMessage],
    events: trio.MemorySendChannel[SupervisionEvent],
) -> tuple[Supervisor, DynamicSupervisor]:
    """Assemble the root supervisor and the sessions' dynamic supervisor from `config`."""
    policy = SupervisorPolicy.from_config(config.supervisor)
    shutdown_s = config.supervisor.shutdown_timeout_s
    sessions = DynamicSupervisor(
        "sessions", max_children=config.gateway.max_connections, policy=policy, events=events
    )
    if not config.engine.embedded:
        endpoints.engine_url = config.engine.rpc_url
    children = [
        *(
            [
                ChildSpec(
                    "engine",
                    _run_embedded_engine,
                    (config, endpoints),
                    shutdown_timeout_s=shutdown_s,
                )
            ]
            if config.engine.embedded
            else []
        ),
        ChildSpec(
            "hub",
            functools.partial(run_hub, heartbeat_interval_s=config.heartbeat.interval_s),
            (hub_receive, config.hub),
            shutdown_timeout_s=shutdown_s,
        ),
        ChildSpec(
            "sessions",
            sessions.run,
            shutdown_timeout_s=config.gateway.drain_timeout_s + 1.0,
            supervisor=True,
        ),
        ChildSpec(
            "gateway",
            _run_gateway,
            (config, hub_send, sessions, health, endpoints),
            shutdown_timeout_s=shutdown_s,
        ),
        ChildSpec(
            "poller",
            run_poller,
            (config.poller, endpoints, hub_send, health),
            shutdown_timeout_s=shutdown_s,
        ),
        ChildSpec(
            "heartbeat",
            run_heartbeat,
            (config.heartbeat, hub_send),
            shutdown_timeout_s=shutdown_s,
        ),
    ]
    root = Supervisor("root", children, policy, events=events)
    return root, sessions


async def serve(
    config: Config, *, task_status: trio.TaskStatus[RunningApp] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the whole tree until cancelled; `started(RunningApp)` once every child is up.

    Error handling: when the root supervisor gives up, `/health` turns `failed` and the error
    propagates. Resource handling: owns the hub's inbox and the supervision event channel.
    """
    health = HealthBoard()
    endpoints = Endpoints()
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](config.hub.inbox_size)
    events_send, events_receive = trio.open_memory_channel[SupervisionEvent](
        SUPERVISION_EVENT_BUFFER
    )
    root, sessions = build_tree(
        config,
        health=health,
        endpoints=endpoints,
        hub_send=hub_send,
        hub_receive=hub_receive,
        events=events_send,
    )
    async with hub_send, hub_receive, events_send, events_receive, trio.open_nursery() as nursery:
        nursery.start_soon(log_supervision_events, events_receive)
        try:
            await nursery.start(root.run)
            task_status.started(RunningApp(endpoints, root, sessions, health, hub_send))
            await trio.sleep_forever()
        except BaseException:
            health.tree_failed = True
            raise
        finally:
            nursery.cancel_scope.cancel()
