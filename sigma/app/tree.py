"""The supervision tree of `sigma serve`, built from one `Config`.

Children of the root supervisor, started in this order and stopped in reverse:

    engine (when embedded) -> hub -> broker (kind = "redis") -> sessions (dynamic) -> gateway
    -> poller -> heartbeat

With `[broker] kind = "redis"` the hub hands every publish to the broker link
(`sigma.broker.stream`), which numbers it in Redis and feeds the hub back every event of the
cluster, and the poller polls only while this node holds the lease (`sigma.broker.leadership`).

So on shutdown the producers stop first, then the gateway stops accepting, then every client
session closes with 1001, then the hub, then the engine. Like the hub's numbering, the table of
live sessions that the gateway's keep-alive sweep pings (`sigma.gateway.keepalive`) is made once
here, so that sessions outliving a gateway restart stay watched.

The actors with loops of their own (hub, poller, heartbeat) are watched (`ChildSpec.watchdog_s`):
each may stay busy and silent for three of its natural periods, and never less than
`[supervisor] watchdog_min_s`, before the root supervisor takes it for hung and restarts it. One
`Metrics` is shared by the hub, the poller, the gateway (`GET /metrics`) and the supervision
event stream, whose events also reach the hub as `supervision` events
(`sigma.supervision_feed`), never making a supervisor wait. One `Faults` registry
(`sigma.faults`) is passed down like the configuration: each actor takes its own fault point
from it, and the gateway's admin endpoint arms them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from sigma.app.policy import HUB_PERIOD_S, poller_period_s, supervisor_policy, watchdog_s
from sigma.broker.leadership import run_poller_when_leader
from sigma.broker.node import RedisBroker, node_id_of
from sigma.broker.stream import run_broker_link
from sigma.config.loading import Config
from sigma.engine.server import EngineHandle, run_engine
from sigma.faults import Faults
from sigma.gateway.run import GatewayHandle, run_gateway
from sigma.gateway.server import Gateway, new_keepalive
from sigma.health import HealthBoard
from sigma.heartbeat import run_heartbeat
from sigma.hub.actor import new_hub_state
from sigma.hub.intake import HubIntake
from sigma.hub.loop import run_hub
from sigma.hub.messages import HubMessage
from sigma.metrics import Metrics
from sigma.poller.actor import run_poller
from sigma.supervision.supervisor import ChildSpec, DynamicSupervisor, SupervisionEvent, Supervisor


@dataclass
class Endpoints:
    """Where the started parts listen; each is written once, by the part that listens."""

    gateway: GatewayHandle | None = None
    engine: EngineHandle | None = None
    engine_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class RootStates:
    """The root supervisor's children and their states, for the heartbeat.

    The heartbeat's spec is part of the tree it reports on, so it gets this holder before the
    root supervisor exists; `build_tree` sets `root` once it does. Until then it reports nothing.
    """

    def __init__(self) -> None:
        self.root: Supervisor | None = None

    def __call__(self) -> Mapping[str, str]:
        """Each child's id and one-word state (`running`, `restarting`, ...), in start order."""
        if self.root is None:
            return {}
        return {child.id: child.state for child in self.root.which_children()}


async def _run_embedded_engine(
    config: Config,
    endpoints: Endpoints,
    faults: Faults,
    *,
    task_status: trio.TaskStatus[EngineHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        handle: EngineHandle = await nursery.start(
            functools.partial(run_engine, faults=faults), config.engine
        )
        endpoints.engine = handle
        endpoints.engine_url = handle.url
        task_status.started(handle)


async def _run_gateway(
    new_gateway: Callable[[], Gateway],
    endpoints: Endpoints,
    *,
    task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway made by `new_gateway`, a new one at each (re)start; note where it listens."""
    async with trio.open_nursery() as nursery:
        handle: GatewayHandle = await nursery.start(run_gateway, new_gateway())
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
    metrics: Metrics,
    faults: Faults | None = None,
) -> tuple[Supervisor, DynamicSupervisor]:
    """Assemble the root supervisor and the sessions' dynamic supervisor from `config`.

    `faults` is the tree's fault registry (a fresh, disarmed one when not given).
    """
    faults = faults or Faults()
    intake = HubIntake(hub_send)
    metrics.attach_intake(intake)
    watchdog_min_s = config.supervisor.watchdog_min_s
    actor_states = RootStates()
    policy = supervisor_policy(config.supervisor)
    shutdown_s = config.supervisor.shutdown_timeout_s
    sessions = DynamicSupervisor(
        "sessions", max_children=config.gateway.max_connections, policy=policy, events=events
    )
    if not config.engine.embedded:
        endpoints.engine_url = config.engine.rpc_url
    node_id = health.node_id or node_id_of(config.broker)
    broker = (
        RedisBroker(
            config.broker,
            history_size=config.hub.history_size,
            queue_size=config.hub.inbox_size,
            node_id=node_id,
        )
        if config.broker.kind == "redis"
        else None
    )
    poller = (
        functools.partial(run_poller, metrics=metrics, faults=faults)
        if broker is None
        else functools.partial(
            run_poller_when_leader, broker=broker, metrics=metrics, faults=faults
        )
    )
    children = [
        *(
            [
                ChildSpec(
                    "engine",
                    _run_embedded_engine,
                    (config, endpoints, faults),
                    shutdown_timeout_s=shutdown_s,
                )
            ]
            if config.engine.embedded
            else []
        ),
        ChildSpec(
            "hub",
            functools.partial(
                run_hub,
                heartbeat_interval_s=config.heartbeat.interval_s,
                metrics=metrics,
                state=new_hub_state(
                    config.hub, heartbeat_interval_s=config.heartbeat.interval_s, node_id=node_id
                ),
                faults=faults,
                intake=intake,
                numbering=broker.submit if broker is not None else None,
                node_id=node_id,
            ),
            (hub_receive, config.hub),
            shutdown_timeout_s=shutdown_s,
            watchdog_s=watchdog_s(HUB_PERIOD_S, minimum_s=watchdog_min_s),
        ),
        *(
            [
                ChildSpec(
                    "broker",
                    functools.partial(
                        run_broker_link,
                        retry_min_s=config.poller.retry_min_s,
                        retry_max_s=config.poller.retry_max_s,
                    ),
                    (broker, intake, health),
                    shutdown_timeout_s=shutdown_s,
                )
            ]
            if broker is not None
            else []
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
            (
                functools.partial(
                    Gateway,
                    config,
                    hub_send,
                    sessions,
                    health,
                    metrics,
                    faults,
                    new_keepalive(config),  # one table for every incarnation: see `Gateway`
                    intake,
                ),
                endpoints,
            ),
            shutdown_timeout_s=shutdown_s,
        ),
        ChildSpec(
            "poller",
            poller,
            (config.poller, endpoints, intake, health),
            shutdown_timeout_s=shutdown_s,
            watchdog_s=watchdog_s(poller_period_s(config.poller), minimum_s=watchdog_min_s),
        ),
        ChildSpec(
            "heartbeat",
            functools.partial(
                run_heartbeat,
                actor_states=actor_states,
                started_at=health.started_at,
                faults=faults,
            ),
            (config.heartbeat, intake),
            shutdown_timeout_s=shutdown_s,
            watchdog_s=watchdog_s(config.heartbeat.interval_s, minimum_s=watchdog_min_s),
        ),
    ]
    root = Supervisor("root", children, policy, events=events)
    actor_states.root = root
    return root, sessions
