"""The heartbeat actor: proves the pipeline is alive by sending an event through it.

Writes: `PublishHeartbeat` to the hub's inbox every `[heartbeat] interval_s`, the first at once,
on a fixed grid (a slow send does not shift the next one). The event's data is what this actor
knows (server time, uptime, its own count, a one-word state per actor of the tree) plus what the
hub adds (client count, last seq), and it is broadcast like any event, so a stalled hub or sender
shows up at the client as missing heartbeats. Exits: when cancelled.

Fault point `heartbeat.tick` (`sigma.faults`) is passed before each beat; `drop` skips that beat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from sigma.config.pipeline import HeartbeatConfig
from sigma.faults import FaultPoint, Faults
from sigma.hub.messages import EventSink, PublishHeartbeat
from sigma.protocol.timestamps import utc_now_iso
from sigma.supervision.watchdog import Liveness

ActorStates = Callable[[], Mapping[str, str]]
"""Reads the tree's actors and their states, e.g. `{"hub": "running", "poller": "restarting"}`."""


def heartbeat_data(
    *, started_at: float, now: float, beat: int, actors: Mapping[str, str]
) -> dict[str, Any]:
    """What the heartbeat actor itself knows: server time, uptime, its count, the actors."""
    return {
        "server_time": utc_now_iso(),
        "uptime_s": round(now - started_at, 3),
        "beat": beat,
        "actors": dict(actors),
    }


async def run_heartbeat(
    config: HeartbeatConfig,
    hub: EventSink,
    *,
    actor_states: ActorStates | None = None,
    started_at: float | None = None,
    liveness: Liveness | None = None,
    faults: Faults | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send a heartbeat through the hub every `interval_s`, the first one at once.

    `actor_states` is read for every beat (no actors are reported without it); `started_at`
    (trio time) is what uptime counts from, by default this incarnation's start. `liveness` is
    given by a supervisor that watches the actor: it beats once per tick, and waiting for room in
    the hub's inbox counts as idle (the hub is watched on its own). `faults` holds the
    `heartbeat.tick` point.

    Resource handling: does not close `hub` (shared with other producers). Error handling: a
    closed hub inbox ends the actor with the error, for the supervisor to restart.
    """
    liveness = liveness or Liveness.unwatched()
    fault = faults.point("heartbeat.tick") if faults is not None else FaultPoint("heartbeat.tick")
    now = trio.current_time()
    uptime_from = now if started_at is None else started_at
    task_status.started()
    beat = 0
    deadline = now
    while True:
        liveness.beat()
        if not (fault.armed and await fault.hit()):
            beat += 1
            actors = actor_states() if actor_states is not None else {}
            data = heartbeat_data(
                started_at=uptime_from, now=trio.current_time(), beat=beat, actors=actors
            )
            liveness.idle()
            await hub.send(PublishHeartbeat(data))
            liveness.beat()
        deadline += config.interval_s
        await trio.sleep_until(deadline)
