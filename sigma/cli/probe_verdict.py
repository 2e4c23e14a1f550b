"""What `sigma check` concludes from what it observed: a Nagios plugin state and one status line.

The maximum heartbeat age A is `--max-heartbeat-age`, or else twice the `heartbeat_interval` the
welcome announces. A heartbeat's age is the larger of two figures, each a lower bound of how long
the pipeline went without delivering a fresh heartbeat: the seconds the probe waited for it after
the welcome, and how old its `timestamp` was when it arrived (the clocks of the probe and the
server are assumed in sync; a timestamp ahead of the probe's clock counts as age 0). The probe
waits up to 2A for a heartbeat after the welcome, so it runs at most `--timeout` + 2A.

- OK (0): a heartbeat arrived with age <= A.
- WARNING (1): a heartbeat arrived late: A < age <= 2A.
- CRITICAL (2): the gateway is down or refuses the probe (connection refused, name not resolved,
  HTTP rejection of the upgrade, no handshake or no welcome within `--timeout`); the welcome, or
  any later frame, breaks the wire contract; the connection closed before a heartbeat; no
  heartbeat within 2A of the welcome; or a heartbeat older than 2A.
- UNKNOWN (3): a usage error, or the probe itself failed (a bug); also when the probe gave up
  before a heartbeat was even due (it never does on its own: it waits up to 2A).

No I/O and no clock here: `sigma.cli.probe` observes the gateway and builds an `Observation`;
`assess()` turns it into a `Verdict`, whose `status` is the exit status and whose `line()` is the
output. `sigma check --help` shows the paragraphs above, from this docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Status(IntEnum):
    """A Nagios plugin state; the value is the exit status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class HeartbeatLimits:
    """The maximum heartbeat age A: older than A is WARNING, older than 2A is CRITICAL."""

    max_age_s: float

    @classmethod
    def for_interval(cls, heartbeat_interval_s: float, max_age_s: float | None) -> HeartbeatLimits:
        """`max_age_s` when given, else twice the announced heartbeat interval."""
        return cls(max_age_s if max_age_s is not None else 2 * heartbeat_interval_s)

    @property
    def critical_after_s(self) -> float:
        """Past this age (and after waiting this long) a missing heartbeat is CRITICAL."""
        return 2 * self.max_age_s

    def classify(self, age_s: float) -> Status:
        """The state for a heartbeat of this age."""
        if age_s <= self.max_age_s:
            return Status.OK
        if age_s <= self.critical_after_s:
            return Status.WARNING
        return Status.CRITICAL


@dataclass(frozen=True)
class Unreachable:
    """No usable connection: down, refused, rejected, or no handshake or welcome in time."""

    reason: str


@dataclass(frozen=True)
class BrokenContract:
    """The gateway answered, but its welcome breaks the wire contract."""

    reason: str


@dataclass(frozen=True)
class HeartbeatSeen:
    """The first heartbeat after the welcome."""

    seq: int
    waited_s: float
    """Seconds from the welcome to its arrival."""
    lag_s: float
    """Seconds between its `timestamp` and its arrival, by the probe's clock (>= 0)."""
    clients: int | None = None
    """The `client_count` it reports, when it reports one."""

    @property
    def age_s(self) -> float:
        """The age that is judged: the larger of the wait and the lag."""
        return max(self.waited_s, self.lag_s)


@dataclass(frozen=True)
class Welcomed:
    """The gateway welcomed the probe; then a heartbeat came, or the wait ended without one."""

    limits: HeartbeatLimits
    connect_s: float
    """Seconds from the start to the completed handshake."""
    waited_s: float
    """Seconds from the welcome until the wait ended (on the heartbeat, or without one)."""
    heartbeat: HeartbeatSeen | None = None
    interrupted: str | None = None
    """Why the wait ended early without a heartbeat: a close, a malformed frame."""


Observation = Unreachable | BrokenContract | Welcomed


@dataclass(frozen=True)
class Verdict:
    """A state, a short summary and Nagios performance data."""

    status: Status
    summary: str
    perfdata: tuple[str, ...] = ()

    def line(self) -> str:
        """The one status line: `SIGMA OK - summary | perfdata`."""
        text = f"SIGMA {self.status.name} - {self.summary}"
        return f"{text} | {' '.join(self.perfdata)}" if self.perfdata else text


def usage_error(message: str) -> Verdict:
    """The verdict for a command line that cannot be run."""
    return Verdict(Status.UNKNOWN, f"usage: {message}")


def assess(observation: Observation) -> Verdict:
    """Decide the state from what was observed (see the module docstring for the rules)."""
    match observation:
        case Unreachable(reason):
            return Verdict(Status.CRITICAL, f"gateway unavailable: {reason}")
        case BrokenContract(reason):
            return Verdict(Status.CRITICAL, f"protocol error: {reason}")
        case Welcomed():
            return _assess_heartbeat(observation)


def _assess_heartbeat(seen: Welcomed) -> Verdict:
    limits = seen.limits
    beat = seen.heartbeat
    connect = perf("connect_time", seen.connect_s, "s")
    if beat is None:
        age = perf("heartbeat_age", None, "s", limits.max_age_s, limits.critical_after_s)
        limit = f"max age {number(limits.max_age_s)}s"
        if seen.interrupted is not None:
            status, summary = Status.CRITICAL, f"no heartbeat: {seen.interrupted}"
        elif seen.waited_s > limits.max_age_s:
            status = Status.CRITICAL
            summary = f"no heartbeat within {seen.waited_s:.1f}s ({limit})"
        else:
            status = Status.UNKNOWN
            summary = f"gave up after {seen.waited_s:.1f}s, before a heartbeat was due"
        return Verdict(status, summary, (age, connect))
    status = limits.classify(beat.age_s)
    label = {Status.OK: "heartbeat", Status.WARNING: "heartbeat late"}.get(
        status, "heartbeat stale"
    )
    summary = f"{label} seq={beat.seq} age={beat.age_s:.1f}s"
    if beat.clients is not None:
        summary += f" clients={beat.clients}"
    if status is not Status.OK:
        summary += f" (max age {number(limits.max_age_s)}s)"
    data = [perf("heartbeat_age", beat.age_s, "s", limits.max_age_s, limits.critical_after_s)]
    if beat.clients is not None:
        data.append(perf("clients", beat.clients))
    data.append(connect)
    return Verdict(status, summary, tuple(data))


def perf(
    label: str,
    value: float | None,
    unit: str = "",
    warn: float | None = None,
    crit: float | None = None,
) -> str:
    """One performance datum, `label=value[unit];warn;crit;0`; an unknown value is `U`."""
    shown = "U" if value is None else f"{number(value)}{unit}"
    thresholds = ";".join("" if t is None else number(t) for t in (warn, crit))
    return f"{label}={shown};{thresholds};0"


def number(value: float, places: int = 3) -> str:
    """A number without trailing zeros: 30, 0.412."""
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
