"""The supervisor's decisions, as plain synchronous classes: no trio, no I/O, no clock of their own.

- `Restart` and `should_restart()`: whether a child that exited is started again (OTP's meanings).
- `Strategy` and `restart_group()`: which children a failure takes down and starts again.
- `Backoff` (from the leaf `sigma.backoff`): how long to wait before a restart.
- `RestartIntensity`: the restart budget, a sliding window over the times of recent restarts.
- `SupervisorPolicy`: the four of them as one value (`sigma.app` builds it from `[supervisor]`).

Times are plain floats in seconds passed in by the caller (`trio.current_time()` in production), so
every decision here can be tested without an event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sigma.backoff import Backoff


class Restart(StrEnum):
    """When a child that exited is started again (OTP's restart types)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (an exception); a normal return is left alone."""
    TEMPORARY = "temporary"
    """Never restarted, not even when a sibling's failure stopped it; it is simply removed."""


class Strategy(StrEnum):
    """Which children a child's failure takes down and starts again (OTP's strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped in reverse start order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and every child started after it."""


def should_restart(restart: Restart, *, abnormal: bool) -> bool:
    """Say whether a child with restart type `restart` is restarted after exiting by itself."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return abnormal
    return False


def restart_group(strategy: Strategy, start_order: Sequence[str], failed_id: str) -> list[str]:
    """Return the ids `strategy` restarts when `failed_id` fails, in start order.

    `start_order` lists the supervisor's children in the order they were started; `failed_id` must
    be one of them.
    """
    if strategy is Strategy.ONE_FOR_ONE:
        return [failed_id]
    if strategy is Strategy.ONE_FOR_ALL:
        return list(start_order)
    return list(start_order[start_order.index(failed_id) :])


class RestartIntensity:
    """The restart budget: at most `max_restarts` restarts within any `max_seconds`.

    A sliding window over the times of recent restarts, as OTP's supervisor keeps it: a restart at
    time `t` still counts at time `now` while `t >= now - max_seconds`.
    """

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 (got {max_restarts})")
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 (got {max_seconds!r})")
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._times: deque[float] = deque()

    @property
    def recent(self) -> int:
        """How many restarts the window held after the last `record()`."""
        return len(self._times)

    def record(self, now: float) -> bool:
        """Record a restart at `now`; return True when the budget is exceeded.

        `now` must not go backwards from one call to the next.
        """
        if self._times and now < self._times[-1]:
            raise ValueError(f"time went backwards: {now!r} < {self._times[-1]!r}")
        self._times.append(now)
        oldest_counted = now - self.max_seconds
        while self._times[0] < oldest_counted:
            self._times.popleft()
        return len(self._times) > self.max_restarts


@dataclass(frozen=True)
class SupervisorPolicy:
    """How a supervisor reacts to failures: strategy, restart budget and backoff."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 5
    max_seconds: float = 10.0
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        RestartIntensity(self.max_restarts, self.max_seconds)  # validates both, raising ValueError

    def new_intensity(self) -> RestartIntensity:
        """Return a fresh, empty restart budget for one run of a supervisor."""
        return RestartIntensity(self.max_restarts, self.max_seconds)
