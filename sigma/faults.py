"""Fault injection as a feature: named fault points that tests, config and operators can arm.

Each actor's loop and each I/O edge passes through a named `FaultPoint`:

| point | where |
| --- | --- |
| `poller.call` | before each JSON-RPC call the poller makes |
| `hub.publish` | before the hub takes the next message from its inbox |
| `sender.write` | before a client's sender writes a batch |
| `connection.try_write` | inside the hub's direct write to an idle client's socket |
| `heartbeat.tick` | before each heartbeat |
| `engine.method` | before the engine runs a method |

A point is armed with an action and a trigger:

- actions: `raise` (an `InjectedFault`, a crash the supervisor sees), `hang` (wait forever, the
  watchdog's business), `delay` (wait `delay_s`, then go on), `drop` (the caller skips the work,
  as `DROP_MEANS` says per point; `hub.publish` refuses it, see there);
- triggers: `once`, every Nth hit (`every`), or with probability `p` under a `seed`.

A disarmed point costs one attribute read: callers write `if point.armed: ...` on hot paths.
One `Faults` registry exists per running tree and is passed down like the configuration; there
is no global state, so tests can run many trees side by side.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Self

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULT_POINTS: tuple[str, ...] = (
    "connection.try_write",
    "engine.method",
    "heartbeat.tick",
    "hub.publish",
    "poller.call",
    "sender.write",
)
FaultActionName = Literal["raise", "hang", "delay", "drop"]
DROP_MEANS: dict[str, str] = {
    "connection.try_write": "the direct write is skipped: the client's sender writes instead",
    "engine.method": "the call goes unanswered: the engine closes the connection without a reply",
    "heartbeat.tick": "this heartbeat is skipped",
    "poller.call": "this poll is skipped",
    "sender.write": "the connection is cut without a close frame, as if the client vanished",
}
"""What `drop` does at each point that supports it. `hub.publish` does not: dropping a message
before the hub numbers it would lose an event that no client could ever notice."""
SYNCHRONOUS_POINTS = frozenset({"connection.try_write"})
"""Points passed in code that never waits (`FaultPoint.hit_now`): they take `raise` or `drop`."""


class InjectedFault(Exception):
    """A failure that was asked for: raised by a point armed with `raise`."""


class FaultSpec(BaseModel):
    """How an armed point behaves: an action and a trigger. Also a `[[faults.points]]` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    point: str
    action: FaultActionName
    delay_s: float = Field(default=1.0, ge=0.0)
    once: bool = False
    every: int | None = Field(default=None, ge=1)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> Self:
        if self.point not in FAULT_POINTS:
            raise ValueError(
                f"unknown fault point {self.point!r}; known: {', '.join(FAULT_POINTS)}"
            )
        if self.action == "drop" and self.point not in DROP_MEANS:
            raise ValueError(
                f"drop is not supported at {self.point}: it would lose a message before it is "
                "numbered, unseen by any client; use raise, hang or delay"
            )
        if self.point in SYNCHRONOUS_POINTS and self.action in ("hang", "delay"):
            raise ValueError(
                f"{self.action} is not supported at {self.point}: it never waits; use raise or drop"
            )
        triggers = [self.once, self.every is not None, self.probability is not None]
        if sum(triggers) > 1:
            raise ValueError("choose one trigger: once, every or probability")
        if self.seed is not None and self.probability is None:
            raise ValueError("seed goes with probability")
        return self

    def describe(self) -> str:
        """A short human-readable form, e.g. `raise every 3rd hit`."""
        action = f"delay {self.delay_s}s" if self.action == "delay" else self.action
        if self.once:
            return f"{action} once"
        if self.every is not None:
            return f"{action} every {self.every} hit(s)"
        if self.probability is not None:
            return f"{action} with probability {self.probability} (seed {self.seed})"
        return f"{action} on every hit"


@dataclass
class FaultPoint:
    """One named place where a fault can be injected; cheap to pass through while disarmed."""

    name: str
    armed: bool = False
    spec: FaultSpec | None = None
    hits: int = 0
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def arm(self, spec: FaultSpec) -> None:
        """Arm with `spec`; the hit counter starts again."""
        self.spec = spec
        self.hits = 0
        self._rng = random.Random(spec.seed)
        self.armed = True

    def disarm(self) -> None:
        """Make the point a no-op again."""
        self.armed = False
        self.spec = None

    def _fires(self) -> FaultSpec | None:
        spec = self.spec
        if not self.armed or spec is None:
            return None
        self.hits += 1
        if spec.every is not None and self.hits % spec.every:
            return None
        if spec.probability is not None and self._rng.random() >= spec.probability:
            return None
        if spec.once:
            self.disarm()
        self.fired += 1
        return spec

    async def hit(self) -> bool:
        """Pass the point: returns True when the caller must drop its work.

        Raises `InjectedFault` for `raise`; never returns for `hang`; waits for `delay`.
        """
        spec = self._fires()
        if spec is None:
            return False
        if spec.action == "raise":
            raise InjectedFault(f"fault injected at {self.name}")
        if spec.action == "hang":
            await trio.sleep_forever()
        if spec.action == "delay":
            await trio.sleep(spec.delay_s)
        return spec.action == "drop"

    def hit_now(self) -> bool:
        """`hit` for code that never waits: raises `InjectedFault` for `raise`, returns True
        for `drop` (the only actions a synchronous point accepts)."""
        spec = self._fires()
        if spec is None:
            return False
        if spec.action == "raise":
            raise InjectedFault(f"fault injected at {self.name}")
        return spec.action == "drop"


class Faults:
    """The fault points of one running tree."""

    def __init__(self, specs: tuple[FaultSpec, ...] = ()) -> None:
        self._points = {name: FaultPoint(name) for name in FAULT_POINTS}
        for spec in specs:
            self.arm(spec)

    def point(self, name: str) -> FaultPoint:
        """The point called `name` (KeyError for an unknown name)."""
        return self._points[name]

    def arm(self, spec: FaultSpec) -> None:
        """Arm the point `spec.point`."""
        self._points[spec.point].arm(spec)

    def clear(self, name: str | None = None) -> None:
        """Disarm one point, or every point."""
        for point in self._points.values():
            if name is None or point.name == name:
                point.disarm()

    def snapshot(self) -> list[dict[str, object]]:
        """Every point with its state, for `sigma fault list` and the admin endpoint."""
        return [
            {
                "point": point.name,
                "armed": point.armed,
                "spec": point.spec.model_dump() if point.spec else None,
                "description": point.spec.describe() if point.spec else "disarmed",
                "hits": point.hits,
                "fired": point.fired,
            }
            for point in self._points.values()
        ]

    @contextmanager
    def armed(self, spec: FaultSpec) -> Iterator[FaultPoint]:
        """Arm a point for the duration of a `with` block (tests)."""
        point = self._points[spec.point]
        point.arm(spec)
        try:
            yield point
        finally:
            point.disarm()
