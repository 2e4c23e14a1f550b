"""Serving one node: `serve` starts the tree and runs it until cancelled.

It makes what the tree shares (health, metrics, faults, the hub's inbox, the supervision event
channel and its tee), builds the tree (`sigma.app.tree`), runs the observer of its supervision
events (`sigma.app.observer`) and the wire feed of them (`sigma.supervision_feed`), and hands
its starter a `RunningApp` once every child is up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import structlog
import trio

from sigma.app.observer import observe_supervision_events
from sigma.app.tree import Endpoints, build_tree
from sigma.broker.node import node_id_of
from sigma.config.loading import Config
from sigma.faults import Faults
from sigma.health import HealthBoard
from sigma.hub.messages import HubMessage
from sigma.metrics import Metrics
from sigma.supervision.supervisor import DynamicSupervisor, SupervisionEvent, Supervisor
from sigma.supervision.tee import SupervisionTee
from sigma.supervision_feed import TreeView, feed_supervision, goes_on_the_wire

log = structlog.get_logger("sigma.app")

SUPERVISION_EVENT_BUFFER = 1024


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


def _only_cancelled(error: BaseException) -> bool:
    """Whether `error` is a cancellation, or a group of nothing but cancellations."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)
