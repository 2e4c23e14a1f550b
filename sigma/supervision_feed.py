"""The supervision tree on the wire: one `supervision` event per supervision event of the tree.

`feed_supervision` reads a `SupervisionTee` subscription (so a supervisor never waits on it: the
tee drops what a full subscription cannot take, and counts it) and publishes each event through
the hub like any other event. Each event's `data` says what happened and how the tree stands
right after it:

    {"kind": "child_exited", "supervisor": "root", "child_id": "poller",
     "reason": "RuntimeError: injected", "restarts": 1, "abnormal": true,
     "tree": {"supervisor": "root",
              "children": [{"id": "hub", "state": "running", "restarts": 0,
                            "last_exit": null, "supervisor": false}, ...,
                           {"id": "sessions", ..., "supervisor": true, "child_count": 3}]}}

`kind` is one of `child_started`, `child_exited`, `restart_scheduled`, `child_hung`,
`intensity_exceeded`, `shutdown_timed_out`; `restarts` is the child's restart count (for
`intensity_exceeded`, the restarts that spent the budget). Because every event carries the
whole `tree`, the newest one is the tree's state, which the hub keeps as the `supervision`
snapshot: a client that subscribes gets it at once.

In a cluster every node's events reach every client, each with `node` (the node's id, as in
its welcome and heartbeats); the hub keeps the newest one per node as snapshots.

The sessions' supervisor starts and ends one temporary child per WebSocket connection; those
events stay off the wire. As numbered events they would cost every connection two seqs, two
history slots and a rendering of the tree, and a client on the default subscriptions would see
a hole in `seq` for each one. The live connection count travels in every heartbeat
(`client_count`) and in each supervision event's `child_count`.
"""

from __future__ import annotations

from typing import Any

import trio

from sigma.hub.messages import HubMessage, Publish
from sigma.protocol.server_messages import make_event
from sigma.supervision.spec import (
    ChildExited,
    ChildHung,
    ChildStarted,
    IntensityExceeded,
    RestartScheduled,
    ShutdownTimedOut,
    SupervisionEvent,
)
from sigma.supervision.supervisor import DynamicSupervisor, Supervisor

KINDS: dict[type, str] = {
    ChildStarted: "child_started",
    ChildExited: "child_exited",
    RestartScheduled: "restart_scheduled",
    ChildHung: "child_hung",
    IntensityExceeded: "intensity_exceeded",
    ShutdownTimedOut: "shutdown_timed_out",
}


class TreeView:
    """Reads the tree's current state: the root's children and the sessions' child count."""

    def __init__(self, root: Supervisor, sessions: DynamicSupervisor, *, node: str = "") -> None:
        self.root = root
        self.sessions = sessions
        self.node = node

    def describe(self) -> dict[str, Any]:
        """The root's children in start order, each with its state, restarts and last exit."""
        children: list[dict[str, Any]] = []
        for child in self.root.which_children():
            row: dict[str, Any] = {
                "id": child.id,
                "state": child.state,
                "restarts": child.restarts,
                "last_exit": child.last_exit,
                "supervisor": child.supervisor,
            }
            if child.id == self.sessions.name:
                row["child_count"] = self.sessions.child_count()
            children.append(row)
        return {"supervisor": self.root.name, "children": children}

    def restarts_of(self, supervisor: str, child_id: str) -> int:
        """How often `child_id` of the root has been restarted; 0 for others (sessions)."""
        if supervisor != self.root.name:
            return 0
        for child in self.root.which_children():
            if child.id == child_id:
                return child.restarts
        return 0


def supervision_data(event: SupervisionEvent, tree: TreeView) -> dict[str, Any]:
    """The `data` of the `supervision` event announcing `event`; see the module docstring."""
    data: dict[str, Any] = {"kind": KINDS[type(event)], "supervisor": event.supervisor}
    match event:
        case IntensityExceeded():
            data.update(
                child_id=None,
                reason=f"{event.restarts} restarts within {event.max_seconds} s",
                restarts=event.restarts,
                max_seconds=event.max_seconds,
            )
        case _:
            data.update(
                child_id=event.child_id,
                reason=None,
                restarts=tree.restarts_of(event.supervisor, event.child_id),
            )
    match event:
        case ChildExited():
            data.update(reason=event.reason, abnormal=event.abnormal)
        case RestartScheduled():
            data.update(reason=event.reason, delay_s=event.delay_s, attempt=event.attempt)
        case ChildHung():
            data.update(reason="hung", silent_for_s=event.silent_for_s)
        case ShutdownTimedOut():
            data.update(reason="shutdown timed out", timeout_s=event.timeout_s)
        case _:
            pass
    data["tree"] = tree.describe()
    if tree.node:
        data["node"] = tree.node
    return data


def goes_on_the_wire(event: SupervisionEvent, tree: TreeView) -> bool:
    """Whether `feed_supervision` publishes `event`: all but the events of the sessions'
    per-connection children (see the module docstring). Subscribe with it as the tee's `where`,
    so that a connection's start and end do not even wake the feed."""
    return event.supervisor != tree.sessions.name


async def feed_supervision(
    events: trio.MemoryReceiveChannel[SupervisionEvent],
    hub: trio.MemorySendChannel[HubMessage],
    tree: TreeView,
) -> None:
    """Publish a `supervision` event for each event of `events` until it ends or is cancelled.

    `events` is a tee subscription: while the hub's inbox is full (or the hub restarts) this
    waits, its subscription fills, and the tee drops the overflow; the tree never waits.
    """
    async with events:
        async for event in events:
            if not goes_on_the_wire(event, tree):
                continue
            await hub.send(Publish((make_event("supervision", supervision_data(event, tree)),)))
