"""Exponential backoff with jitter: the supervisor's restart delays, the poller's retries, the
client's reconnects. A leaf: plain arithmetic, no trio, no clock of its own."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The delay before a restart: exponential in the attempt number, capped, with jitter.

    Akka's formula: `min(max_s, min_s * 2**attempt) * (1 + rng.random() * factor)`, so a delay is
    never below `min_s` and never above `max_s * (1 + factor)`. The supervisor starts counting
    attempts again from 0 once a child has run `reset_after_s` without exiting.
    """

    min_s: float = 0.1
    max_s: float = 5.0
    factor: float = 0.2
    reset_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.min_s > 0:
            raise ValueError(f"min_s must be > 0 (got {self.min_s!r})")
        if not self.max_s >= self.min_s:
            raise ValueError(
                f"max_s must be >= min_s (got max_s={self.max_s!r}, min_s={self.min_s!r})"
            )
        if not 0 <= self.factor <= 1:
            raise ValueError(f"factor must be between 0 and 1 (got {self.factor!r})")
        if not self.reset_after_s >= 0:
            raise ValueError(f"reset_after_s must be >= 0 (got {self.reset_after_s!r})")
        if not math.isfinite(self.max_s):
            raise ValueError(f"max_s must be finite (got {self.max_s!r})")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Return the delay in seconds before restart number `attempt` (0 for the first one)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0 (got {attempt})")
        # Past this many doublings the cap applies; stopping there keeps 2.0**n from overflowing.
        doublings = min(attempt, math.ceil(math.log2(self.max_s / self.min_s)))
        base_s = min(self.max_s, self.min_s * 2.0**doublings)
        return base_s * (1 + rng.random() * self.factor)


@dataclass(frozen=True)
class FullJitter:
    """Reconnect delays with "full jitter": uniform between 0 and an exponential, capped bound.

    `delay_s(attempt)` is `rng.uniform(0, min(max_s, min_s * 2**attempt))`. Unlike `Backoff`,
    whose delays stay near the exponential, this spreads many clients that lost the same server
    at the same instant evenly over the whole window, so they do not come back in a herd.
    """

    min_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.min_s > 0:
            raise ValueError(f"min_s must be > 0 (got {self.min_s!r})")
        if not (self.max_s >= self.min_s and math.isfinite(self.max_s)):
            raise ValueError(
                f"max_s must be finite and >= min_s (got max_s={self.max_s!r}, "
                f"min_s={self.min_s!r})"
            )

    def bound_s(self, attempt: int) -> float:
        """The largest delay attempt number `attempt` (0 for the first) may wait."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0 (got {attempt})")
        doublings = min(attempt, math.ceil(math.log2(self.max_s / self.min_s)))
        return min(self.max_s, self.min_s * 2.0**doublings)

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """A delay drawn uniformly from `[0, bound_s(attempt)]`."""
        return rng.uniform(0.0, self.bound_s(attempt))
