"""The app: one Sigma node, its supervision tree assembled from one `Config` and run.

Only the entry points (the CLI and the `sigma.testing` pytest plugin) import it. Every public
name is importable from here. Read in this order:
- `tree`: `build_tree`, the supervision tree and its start order, `Endpoints`, `RootStates`;
- `policy`: `supervisor_policy` from `[supervisor]`, and the watchdog and poller periods;
- `observer`: `observe_supervision_events`, which logs, counts and tees supervision events;
- `serving`: `serve`, which starts the tree and runs it until cancelled, and `RunningApp`.
"""

from sigma.app.observer import observe_supervision_events
from sigma.app.policy import (
    HUB_PERIOD_S,
    WATCHDOG_MIN_S,
    WATCHDOG_PERIODS,
    poller_period_s,
    supervisor_policy,
    watchdog_s,
)
from sigma.app.serving import SUPERVISION_EVENT_BUFFER, RunningApp, serve
from sigma.app.tree import Endpoints, RootStates, build_tree

__all__ = [
    "HUB_PERIOD_S",
    "SUPERVISION_EVENT_BUFFER",
    "WATCHDOG_MIN_S",
    "WATCHDOG_PERIODS",
    "Endpoints",
    "RootStates",
    "RunningApp",
    "build_tree",
    "observe_supervision_events",
    "poller_period_s",
    "serve",
    "supervisor_policy",
    "watchdog_s",
]
