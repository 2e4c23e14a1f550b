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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import structlog
import trio

from sigma.backoff import Backoff
from sigma.broker.leadership import run_poller_when_leader
from sigma.broker.node import RedisBroker, node_id_of
from sigma.broker.stream import run_broker_link
from sigma.config.loading import Config
from sigma.config.pipeline import PollerConfig
from sigma.config.process import SupervisorConfig
from sigma.engine.server import EngineHandle, run_engine
from sigma.faults import Faults
from sigma.gateway.keepalive import KeepAlive
from sigma.gateway.run import GatewayHandle, run_gateway
from sigma.gateway.server import new_keepalive
from sigma.health import HealthBoard
from sigma.heartbeat import run_heartbeat
from sigma.hub.actor import new_hub_state
from sigma.hub.intake import HubIntake
from sigma.hub.loop import run_hub
from sigma.hub.messages import HubMessage
from sigma.metrics import Metrics
from sigma.poller.actor import run_poller
from sigma.supervision.observe import log_supervision_event, supervision_debug_enabled
from sigma.supervision.supervisor import (
    ChildSpec,
    DynamicSupervisor,
    Strategy,
    SupervisionEvent,
    Supervisor,
    SupervisorPolicy,
)
from sigma.supervision.tee import SupervisionTee
from sigma.supervision_feed import TreeView, feed_supervision, goes_on_the_wire

log = structlog.get_logger("sigma.app")

SUPERVISION_EVENT_BUFFER = 1024
WATCHDOG_MIN_S = 10.0
WATCHDOG_PERIODS = 3
HUB_PERIOD_S = 0.0
"""The hub handles each message synchronously and is idle between them: only the floor applies."""


def watchdog_s(natural_period_s: float, *, minimum_s: float = WATCHDOG_MIN_S) -> float:
    """How long an actor may stay busy without a beat: 3 natural periods, at least `minimum_s`."""
    return max(WATCHDOG_PERIODS * natural_period_s, minimum_s)


def poller_period_s(config: PollerConfig) -> float:
    """The longest the poller goes between beats, in seconds.

    That is a wait for the next due method plus its call (bounded by `timeout_s`), or a retry
    delay (at most `retry_max_s`).
    """
    longest_interval_s = max(config.intervals_s.values(), default=0.0)
    return max(longest_interval_s + config.timeout_s, config.retry_max_s)


@dataclass
class Endpoints:
    """Where the started parts listen; each is written once, by the part that listens."""

    gateway: GatewayHandle | None = None
    engine: EngineHandle | None = None
    engine_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningApp:
    """What `serve` hands its starter: the addresses, the tree, health, metrics and faults.

    `faults` arms the tree's fault points; `supervision.subscribe()` is a channel of the tree's
    supervision events (crashes, restarts, hangs) from then on.
    """

    endpoints: Endpoints
    root: Supervisor
    sessions: DynamicSupervisor
    health: HealthBoard
    hub: trio.MemorySendChannel[HubMessage]
    metrics: Metrics
    faults: Faults
    supervision: SupervisionTee


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
    config: Config,
    hub: trio.MemorySendChannel[HubMessage],
    sessions: DynamicSupervisor,
    health: HealthBoard,
    metrics: Metrics,
    endpoints: Endpoints,
    faults: Faults,
    keepalive: KeepAlive,
    intake: HubIntake,
    *,
    task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        handle: GatewayHandle = await nursery.start(
            functools.partial(run_gateway, faults=faults, keepalive=keepalive, intake=intake),
            config,
            hub,
            sessions,
            health,
            metrics,
        )
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
                config,
                hub_send,
                sessions,
                health,
                metrics,
                endpoints,
                faults,
                new_keepalive(config),
                intake,
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


async def observe_supervision_events(
    events: trio.MemoryReceiveChannel[SupervisionEvent],
    metrics: Metrics,
    tee: SupervisionTee | None = None,
) -> None:
    """Log every supervision event, count it in `metrics` and copy it to `tee`, until it ends.

    Shielded from cancellation, so the events of a shutdown are seen too: it ends when the tree's
    owner closes the send end, after the tree has stopped; then it closes `tee`.
    """
    debug = supervision_debug_enabled()
    with trio.CancelScope(shield=True):
        try:
            async for first in events:
                for event in _and_what_waits(first, events):
                    log_supervision_event(event, debug=debug)
                    metrics.observe_supervision(event)
                    if tee is not None:
                        tee.publish(event)
        finally:
            if tee is not None:
                tee.close()


def _and_what_waits(
    first: SupervisionEvent, events: trio.MemoryReceiveChannel[SupervisionEvent]
) -> Iterator[SupervisionEvent]:
    """`first`, then the events already buffered behind it: a burst (a thousand connections
    opening) is taken in one turn of the task instead of a trip through the run loop each."""
    yield first
    while True:
        try:
            yield events.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


async def serve(
    config: Config,
    *,
    faults: Faults | None = None,
    task_status: trio.TaskStatus[RunningApp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole tree until cancelled; `started(RunningApp)` once every child is up.

    `faults`, when not given, is a new registry with `[faults] points` armed.

    Error handling: when the root supervisor gives up, `/health` turns `failed` and the error
    propagates. Resource handling: owns the hub's inbox and the supervision event channel, whose
    send end is closed once the tree has stopped, so that its reader ends after the last event.
    """
    health = HealthBoard(node_id=node_id_of(config.broker), broker_kind=config.broker.kind)
    metrics = Metrics(started_at=health.started_at)
    faults = faults or Faults(config.faults.points)
    for spec in config.faults.points:
        log.warning("Fault point armed from the config", point=spec.point, fault=spec.describe())
    if config.faults.admin:
        log.warning("Fault admin endpoint on: /admin/faults answers loopback peers")
    tee = SupervisionTee()
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
        metrics=metrics,
        faults=faults,
    )
    async with hub_send, hub_receive, events_receive, trio.open_nursery() as observers:
        observers.start_soon(observe_supervision_events, events_receive, metrics, tee)
        async with events_send, trio.open_nursery() as tree:
            view = TreeView(root, sessions, node=health.node_id)
            on_the_wire = functools.partial(goes_on_the_wire, tree=view)
            tree.start_soon(feed_supervision, tee.subscribe(where=on_the_wire), hub_send, view)
            try:
                await tree.start(root.run)
                task_status.started(
                    RunningApp(endpoints, root, sessions, health, hub_send, metrics, faults, tee)
                )
                await trio.sleep_forever()
            except BaseException as error:
                if not _only_cancelled(error):  # a clean stop (Ctrl-C, SIGTERM) is no failure
                    health.tree_failed = True
                raise
            finally:
                tree.cancel_scope.cancel()


def supervisor_policy(config: SupervisorConfig) -> SupervisorPolicy:
    """The supervision library's policy, built from the `[supervisor]` configuration section."""
    backoff = config.backoff
    return SupervisorPolicy(
        strategy=Strategy(config.strategy),
        max_restarts=config.max_restarts,
        max_seconds=config.max_seconds,
        backoff=Backoff(
            min_s=backoff.min_s,
            max_s=backoff.max_s,
            factor=backoff.factor,
            reset_after_s=backoff.reset_after_s,
        ),
    )


def _only_cancelled(error: BaseException) -> bool:
    """Whether `error` is a cancellation, or a group of nothing but cancellations."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)
