"""What `GET /health` reports: one small board that the tree and the poller write to.

States, as the contract fixes them: `healthy` (200) while the tree runs; `degraded` (200) while
the engine or the cluster's broker (Redis) is unreachable; `failed` (503) once the tree has given
up. It also names this node, its broker (`kind`, `connected`, and `held_back`: a cluster node
that reads the stream no further while its clients lag as a herd) and its poller's role
(`leader` polls the engine; a `standby` waits for the lease).
"""

from __future__ import annotations

from typing import Any

import trio

from sigma import __version__
from sigma.protocol.timestamps import utc_now_iso


class HealthBoard:
    """The current health, written by its few owners and read by the gateway.

    Only the poller writes `engine_reachable`, only the tree runner writes `tree_failed`, only
    the broker link writes `broker_connected` and `broker_held_back`, only the poller's
    leadership writes `poller_role`; the gateway only reads, so no write ever races another.
    """

    def __init__(self, *, node_id: str = "", broker_kind: str = "memory") -> None:
        self.engine_reachable = True
        self.tree_failed = False
        self.started_at = trio.current_time()
        self.node_id = node_id
        self.broker_kind = broker_kind
        self.broker_connected = broker_kind == "memory"
        self.broker_held_back = False
        self.poller_role = "leader" if broker_kind == "memory" else "standby"

    @property
    def status(self) -> str:
        """`healthy`, `degraded` or `failed`."""
        if self.tree_failed:
            return "failed"
        return "healthy" if self.engine_reachable and self.broker_connected else "degraded"

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of `GET /health`."""
        status = self.status
        body = {
            "status": status,
            "timestamp": utc_now_iso(),
            "version": __version__,
            "uptime_s": round(trio.current_time() - self.started_at, 3),
            "engine_reachable": self.engine_reachable,
            "node": self.node_id,
            "broker": {
                "kind": self.broker_kind,
                "connected": self.broker_connected,
                "held_back": self.broker_held_back,
            },
            "poller": self.poller_role,
        }
        return (503 if status == "failed" else 200), body
