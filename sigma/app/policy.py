"""How the tree's supervisors restart and watch their children.

`supervisor_policy` turns the `[supervisor]` section into the supervision library's policy, and
`watchdog_s` says how long a watched actor (`ChildSpec.watchdog_s`) may stay busy and silent
before the root supervisor takes it for hung: three of its natural periods (`HUB_PERIOD_S`,
`poller_period_s`, the heartbeat's interval), and never less than `[supervisor] watchdog_min_s`.
"""

from __future__ import annotations

from sigma.backoff import Backoff
from sigma.config.pipeline import PollerConfig
from sigma.config.process import SupervisorConfig
from sigma.supervision.supervisor import Strategy, SupervisorPolicy

WATCHDOG_MIN_S = 10.0
WATCHDOG_PERIODS = 3
HUB_PERIOD_S = 0.0
"""The hub handles each message synchronously and is idle between them: only the floor applies."""


def watchdog_s(natural_period_s: float, *, minimum_s: float = WATCHDOG_MIN_S) -> float:
    """How long an actor may stay busy without a beat: 3 natural periods, at least `minimum_s`."""
    return max(WATCHDOG_PERIODS * natural_period_s, minimum_s)


def poller_period_s(config: PollerConfig) -> float:
    """The longest the poller goes between beats, in seconds.

    That is a wait for the next due method plus its call (bounded by `timeout_s`), or a retry
    delay (at most `retry_max_s`).
    """
    longest_interval_s = max(config.intervals_s.values(), default=0.0)
    return max(longest_interval_s + config.timeout_s, config.retry_max_s)


def supervisor_policy(config: SupervisorConfig) -> SupervisorPolicy:
    """The supervision library's policy, built from the `[supervisor]` configuration section."""
    backoff = config.backoff
    return SupervisorPolicy(
        strategy=Strategy(config.strategy),
        max_restarts=config.max_restarts,
        max_seconds=config.max_seconds,
        backoff=Backoff(
            min_s=backoff.min_s,
            max_s=backoff.max_s,
            factor=backoff.factor,
            reset_after_s=backoff.reset_after_s,
        ),
    )
