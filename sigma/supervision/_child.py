"""`ChildRecord`, a supervisor's record of one child, and `Incarnation`, one run of that child.

`SupervisorCore` (`sigma.supervision._core`) makes and reads them; they hold no supervision logic
of their own beyond passing `started()` on and telling when a run has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from sigma.supervision.spec import ChildSpec, ChildState
from sigma.supervision.watchdog import Liveness

if TYPE_CHECKING:
    from sigma.supervision._core import SupervisorCore


@dataclass(eq=False, slots=True)
class ChildRecord:
    """The supervisor's record of one child across its incarnations."""

    spec: ChildSpec
    state: ChildState = "stopped"
    restarts: int = 0
    attempt: int = 0  # consecutive restarts, the backoff exponent
    last_exit: str | None = None
    started_at: float | None = None
    generation: int = 0  # incarnation number: tells a stale restart request from a live one
    hung_generation: int = 0  # the last incarnation the watchdog found hung (0: none)
    incarnation: Incarnation | None = None  # the latest one, running or ended

    def running(self) -> Incarnation | None:
        """The current incarnation while it runs (or is stopping); None once it has ended."""
        run = self.incarnation
        return run if run is not None and not run.has_ended else None

    def is_alive(self) -> bool:
        """True while the current incarnation runs (or is stopping)."""
        return self.running() is not None


class Incarnation:
    """One run of a child: the `task_status` its start function is given, and its state.

    It passes `started()` on to trio and tells the supervisor (`SupervisorCore._child_started`);
    the supervisor reads its cancel scope and whether it has ended. One object per start, in
    place of a `functools.partial`, a start signal and a `trio.Event` per child: an event is
    made only when someone waits for the end (a shutdown, a watchdog), which a WebSocket
    session, started by the thousand and stopped one by one as its client leaves, seldom needs.
    """

    __slots__ = (
        "_core",
        "_ended",
        "_task_status",
        "child",
        "generation",
        "has_ended",
        "is_started",
        "liveness",
        "scope",
        "task",
    )

    def __init__(
        self,
        core: SupervisorCore,
        child: ChildRecord,
        task_status: trio.TaskStatus[object],
        liveness: Liveness | None,
        task: trio.lowlevel.Task | None,
    ) -> None:
        self._core: SupervisorCore | None = core  # None once started() has reported
        self._task_status = task_status
        self._ended: trio.Event | None = None
        self.child = child
        self.generation = child.generation
        self.scope = trio.CancelScope()
        self.liveness = liveness
        self.task = task
        """The child's task when it runs under `nursery.start` (None when started soon)."""
        self.is_started = False
        self.has_ended = False

    def started(self, value: object = None) -> None:
        """The child's `task_status.started()`: hand `value` to trio, then tell the supervisor."""
        self._task_status.started(value)
        # Let go of the starter's task and nursery: the child may run for days, and every
        # long-lived child (one per WebSocket session) would keep them alive.
        self._task_status = trio.TASK_STATUS_IGNORED
        core, self._core = self._core, None
        self.is_started = core is None or core._child_started(self)

    def end(self) -> None:
        """The child's task has finished: wake whoever waits for it."""
        self.has_ended = True
        if self._ended is not None:
            self._ended.set()

    def ended(self) -> trio.Event:
        """An event set once the child's task has finished (made on first use)."""
        if self._ended is None:
            self._ended = trio.Event()
            if self.has_ended:
                self._ended.set()
        return self._ended
