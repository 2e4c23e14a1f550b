"""How the process itself runs: `[supervisor]` (with its backoff), `[faults]`, `[logging]`."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from sigma.config.section import PositiveSeconds, Section
from sigma.faults import FaultSpec


class BackoffConfig(Section):
    """`[supervisor.backoff]`: the delay before each restart, exponential with jitter."""

    min_s: PositiveSeconds = 0.1
    max_s: PositiveSeconds = 5.0
    factor: float = Field(default=0.2, ge=0.0, le=1.0)
    reset_after_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Self:
        if self.max_s < self.min_s:
            raise ValueError(f"max_s must be >= min_s (got max_s={self.max_s}, min_s={self.min_s})")
        return self


class SupervisorConfig(Section):
    """`[supervisor]`: the root supervisor's strategy, restart intensity, watchdog and backoff.

    `watchdog_min_s` is the least time a looping actor may stay busy and silent before it is
    taken for hung (the deadline is three of its natural periods, never less than this).
    """

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    max_restarts: int = Field(default=5, ge=0)
    max_seconds: PositiveSeconds = 10.0
    shutdown_timeout_s: PositiveSeconds = 5.0
    watchdog_min_s: PositiveSeconds = 10.0
    backoff: BackoffConfig = BackoffConfig()


class FaultsConfig(Section):
    """`[faults]`: fault injection (`sigma.faults`), for tests, soak runs and game days.

    `points` (`[[faults.points]]` tables, each a `FaultSpec`) are armed when the tree starts.
    `admin = true` turns on `/admin/faults` on the gateway port, which answers loopback peers only;
    off, the route does not exist (404).
    """

    admin: bool = False
    points: tuple[FaultSpec, ...] = ()


class LoggingConfig(Section):
    """`[logging]`: level and format; `--log-level` and `--log-format` override them."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"
