"""The supervisor's public data: `ChildSpec`, the supervision events, and what it reports.

Plain frozen dataclasses with no behaviour beyond validation, so that readers of the event stream
(the log, the metrics) and writers of specs need not import the supervisor's machinery.
`sigma.supervision.supervisor` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

from sigma.supervision.policy import Restart

ChildState = Literal["starting", "running", "hung", "restarting", "stopping", "stopped"]
"""What a child is doing; `hung` while a watched child that missed its deadline is cancelled."""

HUNG = "hung"
"""The `ChildExited.reason` of a child that the watchdog cancelled."""


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: `await nursery.start(start, *args)`, so `start` takes `task_status=`.

    `shutdown_timeout_s` bounds how long stopping the child may take; give a child that is itself a
    supervisor (`supervisor=True`, `start=inner.run`) enough for its own children to stop.

    `watchdog_s`, when set, makes the child a watched one: `start` is also called with a keyword
    argument `liveness=` (a `sigma.supervision.watchdog.Liveness`), and a child that neither beats
    nor says it is idle for `watchdog_s` after `started()` is treated as hung: `ChildHung` is
    announced, the
    child is cancelled and then restarted as after an abnormal exit with reason "hung". Unwatched
    children (`None`, the default) get no `liveness` argument.
    """

    id: str
    start: Callable[..., Awaitable[object]]
    args: tuple[object, ...] = ()
    restart: Restart = Restart.PERMANENT
    shutdown_timeout_s: float = 5.0
    supervisor: bool = False
    watchdog_s: float | None = None

    def __post_init__(self) -> None:
        if not self.shutdown_timeout_s >= 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0 (got {self.shutdown_timeout_s!r})")
        if self.watchdog_s is not None and not self.watchdog_s > 0:
            raise ValueError(f"watchdog_s must be > 0 or None (got {self.watchdog_s!r})")


# --- supervision events ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _EventFields:
    supervisor: str  # the supervisor's name
    at: float  # trio.current_time()


class EventStamp(TypedDict):
    """The fields every supervision event starts with."""

    supervisor: str
    at: float


@dataclass(frozen=True, kw_only=True)
class ChildStarted(_EventFields):
    """A child called `task_status.started()`: it runs under the supervisor now."""

    child_id: str


@dataclass(frozen=True, kw_only=True)
class ChildExited(_EventFields):
    """A child ended: `reason` is "normal", "shutdown" (we stopped it), "hung" or its error."""

    child_id: str
    reason: str
    abnormal: bool


@dataclass(frozen=True, kw_only=True)
class ChildHung(_EventFields):
    """A watched child was silent for `silent_for_s` (its `watchdog_s`): it is being cancelled."""

    child_id: str
    silent_for_s: float


@dataclass(frozen=True, kw_only=True)
class RestartScheduled(_EventFields):
    """A child will be restarted after `delay_s`, because it exited with `reason`.

    `attempt` counts the restarts just before it (the backoff exponent).
    """

    child_id: str
    delay_s: float
    attempt: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class IntensityExceeded(_EventFields):
    """`restarts` restarts within `max_seconds` spent the budget: the supervisor gives up."""

    restarts: int
    max_seconds: float


@dataclass(frozen=True, kw_only=True)
class ShutdownTimedOut(_EventFields):
    """A child did not stop within `timeout_s` of being cancelled ("unkillable"): left behind."""

    child_id: str
    timeout_s: float


SupervisionEvent = (
    ChildStarted | ChildExited | ChildHung | RestartScheduled | IntensityExceeded | ShutdownTimedOut
)


# --- what a supervisor reports ----------------------------------------------------------------


@dataclass(frozen=True)
class ChildInfo:
    """One child as `which_children()` reports it."""

    id: str
    state: ChildState
    restarts: int
    last_exit: str | None
    started_at: float | None
    supervisor: bool
    watchdog_s: float | None
    """Its spec's `watchdog_s`: how long it may go without a beat (None: not watched)."""


@dataclass(frozen=True)
class ChildCounts:
    """`count_children()`, as in OTP: children known, running, and how many are supervisors."""

    specs: int
    active: int
    supervisors: int
    workers: int


def describe_exit(error: BaseException) -> str:
    """Name an error the way `ChildExited.reason` does: "ValueError: boom", groups with members.

    A group of one is named by its member: the nursery that wrapped it says nothing more.
    """
    name = type(error).__name__
    if isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) == 1:
            return describe_exit(error.exceptions[0])
        members = "; ".join(describe_exit(member) for member in error.exceptions)
        return f"{name}: {error.message} [{members}]"
    text = str(error)
    return f"{name}: {text}" if text else name
