"""What `GET /health` reports: one small board that the tree and the poller write to.

States, as the contract fixes them: `healthy` (200) while the tree runs; `degraded` (200) while
the engine is unreachable; `failed` (503) once the tree has given up.
"""

from __future__ import annotations

from typing import Any

import trio

from sigma import __version__
from sigma.protocol import utc_now_iso


class HealthBoard:
    """The current health, written by its few owners and read by the gateway.

    Only the poller writes `engine_reachable`, only the tree runner writes `tree_failed`; the
    gateway only reads, so no write ever races another.
    """

    def __init__(self) -> None:
        self.engine_reachable = True
        self.tree_failed = False
        self.started_at = trio.current_time()

    @property
    def status(self) -> str:
        """`healthy`, `degraded` or `failed`."""
        if self.tree_failed:
            return "failed"
        return "healthy" if self.engine_reachable else "degraded"

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of `GET /health`."""
        status = self.status
        body = {
            "status": status,
            "timestamp": utc_now_iso(),
            "version": __version__,
            "uptime_s": round(trio.current_time() - self.started_at, 3),
            "engine_reachable": self.engine_reachable,
        }
        return (503 if status == "failed" else 200), body
