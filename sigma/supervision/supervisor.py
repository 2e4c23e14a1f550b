"""OTP-style supervision on trio nurseries: `ChildSpec`, `Supervisor` and `DynamicSupervisor`.

A supervisor owns one nursery. It starts its children one at a time with `await nursery.start()`,
restarts them when they fail (as their `Restart` type and the `Strategy` say, after a `Backoff`
delay, within a `RestartIntensity` budget), and stops them in reverse start order, each within its
`shutdown_timeout_s`. When the budget is spent it stops every child and raises
`RestartIntensityExceeded`, which a parent supervisor handles like any other child failure.

A child whose spec sets `watchdog_s` is also watched for liveness (`sigma.supervision.watchdog`):
one that stays busy and silent past its deadline is announced with `ChildHung`, cancelled, and
restarted as after an abnormal exit with reason "hung".

The decisions live in `sigma.supervision.policy` and `sigma.supervision.watchdog` (plain
synchronous classes), the data types in `sigma.supervision.spec` (all re-exported here), the
machinery both supervisors share in `sigma.supervision._core` (each child's record and runs in
`sigma.supervision._child`); this module holds the two supervisors' own behaviour. They write
supervision events to an optional channel with `send_nowait` and never block on it, close it or
log anything themselves.

Trio cannot kill a task: a child that shields itself from cancellation, or never reaches a
checkpoint, is reported with `ShutdownTimedOut` and left behind, and the supervisor's nursery still
waits for it before `run()` returns. Bounding the whole process is the CLI's job.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import trio

from sigma.backoff import Backoff
from sigma.errors import StartFailed, TooManyChildren
from sigma.supervision._child import ChildRecord
from sigma.supervision._core import SupervisorCore
from sigma.supervision.policy import (
    Restart,
    RestartIntensity,
    Strategy,
    SupervisorPolicy,
)
from sigma.supervision.spec import (
    HUNG,
    ChildCounts,
    ChildExited,
    ChildHung,
    ChildInfo,
    ChildSpec,
    ChildStarted,
    ChildState,
    IntensityExceeded,
    RestartScheduled,
    ShutdownTimedOut,
    SupervisionEvent,
    describe_exit,
)
from sigma.supervision.watchdog import Liveness

__all__ = [
    "DEFAULT_POLICY",
    "HUNG",
    "Backoff",
    "ChildCounts",
    "ChildExited",
    "ChildHung",
    "ChildInfo",
    "ChildSpec",
    "ChildStarted",
    "ChildState",
    "DynamicSupervisor",
    "IntensityExceeded",
    "Liveness",
    "Restart",
    "RestartIntensity",
    "RestartScheduled",
    "ShutdownTimedOut",
    "Strategy",
    "SupervisionEvent",
    "Supervisor",
    "SupervisorPolicy",
    "describe_exit",
]

DEFAULT_POLICY = SupervisorPolicy()
"""one_for_one, at most 5 restarts in 10 s, backoff from 0.1 s to 5 s."""


class Supervisor(SupervisorCore):
    """A fixed set of children, started in order, restarted by `policy`, stopped in reverse.

    As in OTP, a one_for_all or rest_for_one restart starts every non-temporary child of its group
    again, a transient child that had already returned normally included.

    `events`, when given, receives every `SupervisionEvent` by `send_nowait` (dropped and counted
    in `dropped_events` when full or closed; never closed here). `rng` draws the backoff jitter.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        policy: SupervisorPolicy = DEFAULT_POLICY,
        *,
        events: trio.MemorySendChannel[SupervisionEvent] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"supervisor {name!r}: child ids must be unique (got {ids})")
        self._specs = tuple(children)
        super().__init__(name, policy, events, rng)
        self._children = {spec.id: ChildRecord(spec) for spec in self._specs}

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, call `task_status.started(self)`, then supervise them.

        Runs until cancelled; each run starts from the specs afresh, so a parent can restart it.

        Resource handling: owns a nursery with one task per child, and one more per watched
        child (its watchdog). On cancellation or failure the children are cancelled one by one
        in reverse start order, each waited for at most its `shutdown_timeout_s`; one that
        outlives it is reported (`ShutdownTimedOut`) and skipped, but the nursery still waits for
        it before `run()` returns.

        Error handling: raises `StartFailed` (from the child's error) when a child fails to start,
        after stopping the ones started before it; `RestartIntensityExceeded` when the restart
        budget is spent, after stopping every child. `KeyboardInterrupt` and `SystemExit` from a
        child propagate (in an exception group) after the others are stopped.
        """
        self._children = {spec.id: ChildRecord(spec) for spec in self._specs}
        await self._run(task_status)

    async def _start_initial_children(self) -> None:
        for child in list(self._children.values()):
            try:
                await self._start(child)
            except Exception as exc:
                child.state = "stopped"
                raise StartFailed(
                    f"supervisor {self.name!r}: child {child.spec.id!r} failed to start: "
                    f"{describe_exit(exc)}"
                ) from exc


class DynamicSupervisor(SupervisorCore):
    """Children added and removed at run time (one WebSocket session each, say); one_for_one.

    Children are independent, so every restart is one_for_one (as in OTP's DynamicSupervisor):
    the strategy of `policy` is replaced, its budget and backoff apply. `max_children` caps how
    many children it holds at once. `events` and `rng` as for `Supervisor`.
    """

    def __init__(
        self,
        name: str,
        *,
        max_children: int | None = None,
        policy: SupervisorPolicy = DEFAULT_POLICY,
        events: trio.MemorySendChannel[SupervisionEvent] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_children is not None and max_children < 0:
            raise ValueError(f"max_children must be >= 0 (got {max_children})")
        one_for_one = dataclasses.replace(policy, strategy=Strategy.ONE_FOR_ONE)
        super().__init__(name, one_for_one, events, rng)
        self.max_children = max_children

    def _check_can_start(self, spec: ChildSpec) -> None:
        if self._nursery is None or self._closing:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if spec.id in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        if self.max_children is not None and len(self._children) >= self.max_children:
            raise TooManyChildren(
                f"supervisor {self.name!r} already runs {self.max_children} children"
            )

    def child_count(self) -> int:
        """How many children it holds (starting, running or stopping); O(1), unlike
        `count_children()`, for checks made on every new child."""
        return len(self._children)

    async def run(
        self, *, task_status: trio.TaskStatus[DynamicSupervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Call `task_status.started(self)`, then supervise children added by `start_child`.

        Runs until cancelled, and starts empty each time.

        Resource handling: owns a nursery with one task per child (two for a watched one). On
        cancellation every child is cancelled at once and each waited for at most its
        `shutdown_timeout_s` (`ShutdownTimedOut` past it; the nursery still waits for such a
        child in the end).

        Error handling: raises `RestartIntensityExceeded` when restarts of permanent or transient
        children spend the budget, after stopping every child.
        """
        self._children = {}
        await self._run(task_status)

    async def start_child(self, spec: ChildSpec) -> object:
        """Start a child under this supervisor; return what it passed to `task_status.started()`.

        Raises `TooManyChildren` when `max_children` are running (nothing is started), ValueError
        when a child with this id is already there, RuntimeError when the supervisor is not
        running, and whatever the child raised before calling `started()`.
        """
        self._check_can_start(spec)
        child = self._children[spec.id] = ChildRecord(spec)  # holds the place while it starts
        try:
            return await self._start(child)
        except BaseException:
            self._forget(child)
            raise

    def start_child_soon(self, spec: ChildSpec) -> None:
        """Start a child under this supervisor without waiting for its `task_status.started()`.

        For children started by the thousand (one per accepted connection): no task waits for
        the child, and trio's `nursery.start` machinery (a nursery and a cancel scope per start,
        a hand-over between tasks) is skipped. The child holds its place, and counts in
        `child_count()`, from this call on. What it raises before `started()` is reported as an
        abnormal `ChildExited` and the child is forgotten (nobody is there to hear it); after
        `started()` it is supervised exactly as with `start_child`.

        Raises `TooManyChildren`, ValueError and RuntimeError as `start_child` does, at once.
        """
        self._check_can_start(spec)
        child = self._children[spec.id] = ChildRecord(spec)  # holds the place while it starts
        self._start_soon(child)

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child and forget it, waiting at most its `shutdown_timeout_s`.

        Raises KeyError for an unknown id. A child that outlives its timeout is reported with
        `ShutdownTimedOut` and left behind.
        """
        child = self._children[child_id]
        self._forget(child)
        await self._stop_child(child)

    async def _stop_all(self) -> None:
        """Cancel every child at once, then wait for each within its own timeout."""
        now = trio.current_time()
        children = list(self._children.values())
        for child in children:
            self._cancel_child(child)
        for child in children:
            if child.is_alive():
                await self._wait_stopped(child, now + child.spec.shutdown_timeout_s)
