"""The heartbeat actor: proves the pipeline is alive by sending an event through it.

Writes: `PublishHeartbeat` to the hub's inbox every `[heartbeat] interval_s`; the hub adds the
client count and last seq and broadcasts it like any event, so a stalled hub or sender shows up
at the client as missing heartbeats. Exits: when cancelled.
"""

from __future__ import annotations

from typing import Any

import trio

from sigma.actors.hub import HubMessage, PublishHeartbeat
from sigma.config import HeartbeatConfig
from sigma.protocol import utc_now_iso


def heartbeat_data(*, started_at: float, now: float, beat: int) -> dict[str, Any]:
    """What the heartbeat actor itself knows: server time, uptime and its own count."""
    return {"server_time": utc_now_iso(), "uptime_s": round(now - started_at, 3), "beat": beat}


async def run_heartbeat(
    config: HeartbeatConfig,
    hub: trio.MemorySendChannel[HubMessage],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send a heartbeat through the hub every `interval_s`, the first one at once.

    Resource handling: does not close `hub` (shared with other producers). Error handling: a
    closed hub inbox ends the actor with the error, for the supervisor to restart.
    """
    started_at = trio.current_time()
    task_status.started()
    beat = 0
    deadline = started_at
    while True:
        beat += 1
        data = heartbeat_data(started_at=started_at, now=trio.current_time(), beat=beat)
        await hub.send(PublishHeartbeat(data))
        deadline += config.interval_s
        await trio.sleep_until(deadline)
