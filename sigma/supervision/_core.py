"""The machinery `Supervisor` and `DynamicSupervisor` share: one child's life, restarts, stops.

`SupervisorCore` runs children in its nursery, records how each incarnation ends, applies the
restart policy (`sigma.supervision.policy`) and the watchdog (`sigma.supervision.watchdog`), and
stops children within their shutdown timeouts. It is not used on its own;
`sigma.supervision.supervisor` documents
the behaviour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Self

import trio

from sigma.errors import RestartIntensityExceeded, SupervisorError
from sigma.supervision._child import ChildRecord, Incarnation
from sigma.supervision.policy import (
    Restart,
    RestartIntensity,
    SupervisorPolicy,
    restart_group,
    should_restart,
)
from sigma.supervision.spec import (
    HUNG,
    ChildCounts,
    ChildExited,
    ChildHung,
    ChildInfo,
    ChildStarted,
    ChildState,
    EventStamp,
    IntensityExceeded,
    RestartScheduled,
    ShutdownTimedOut,
    SupervisionEvent,
    describe_exit,
)
from sigma.supervision.watchdog import Liveness, wait_until_hung


@dataclass(frozen=True)
class _RestartRequest:
    child: ChildRecord
    generation: int


class SupervisorCore:
    """What both supervisors share: running children, restarting them, stopping them, events."""

    def __init__(
        self,
        name: str,
        policy: SupervisorPolicy,
        events: trio.MemorySendChannel[SupervisionEvent] | None,
        rng: random.Random | None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.dropped_events = 0
        """Events not delivered because the channel was full or closed."""
        self._events = events
        self._rng = rng if rng is not None else random.Random()
        self._children: dict[str, ChildRecord] = {}  # in start order
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._reset_run_state()

    def which_children(self) -> list[ChildInfo]:
        """Describe every child the supervisor knows, in start order."""
        return [
            ChildInfo(
                id=child.spec.id,
                state=child.state,
                restarts=child.restarts,
                last_exit=child.last_exit,
                started_at=child.started_at,
                supervisor=child.spec.supervisor,
                watchdog_s=child.spec.watchdog_s,
            )
            for child in self._children.values()
        ]

    def count_children(self) -> ChildCounts:
        """Count the children: known specs, active (running) ones, supervisors and workers."""
        children = list(self._children.values())
        supervisors = sum(child.spec.supervisor for child in children)
        return ChildCounts(
            specs=len(children),
            active=sum(child.state in ("running", "hung", "stopping") for child in children),
            supervisors=supervisors,
            workers=len(children) - supervisors,
        )

    # --- one run -------------------------------------------------------------------------------

    def _reset_run_state(self) -> None:
        self._closing = False
        self._intensity: RestartIntensity = self.policy.new_intensity()
        # At most one pending request per child (it is not running while one is), so bounded.
        self._restart_send, self._restart_receive = trio.open_memory_channel[_RestartRequest](
            math.inf
        )

    async def _run(self, task_status: trio.TaskStatus[Self]) -> None:
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._reset_run_state()
        failure: SupervisorError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._start_initial_children()
                    task_status.started(self)
                    await self._handle_restart_requests()
                except SupervisorError as exc:  # ours: StartFailed or RestartIntensityExceeded
                    failure = exc
                finally:
                    self._closing = True
                    with trio.CancelScope(shield=True):  # bounded by the children's timeouts
                        await self._stop_all()
                    self._mark_idle_children_stopped()
        finally:
            self._nursery = None
        if failure is not None:
            raise failure

    async def _start_initial_children(self) -> None:
        """Start the children a run begins with (none for a dynamic supervisor)."""

    def _mark_idle_children_stopped(self) -> None:
        for child in self._children.values():
            if not child.is_alive():
                child.state = "stopped"

    async def _stop_all(self) -> None:
        """Stop every child, in reverse start order."""
        for child in reversed(list(self._children.values())):
            await self._stop_child(child)

    # --- a child's task ------------------------------------------------------------------------

    async def _start(self, child: ChildRecord) -> object:
        """Start a new incarnation of `child` in the nursery; return what it passed to started()."""
        assert self._nursery is not None, "children start only while the supervisor runs"
        child.generation += 1
        child.state = "starting"
        return await self._nursery.start(self._run_child, child)

    def _start_soon(self, child: ChildRecord) -> None:
        """Start a new incarnation of `child` in the nursery without waiting for started()."""
        assert self._nursery is not None, "children start only while the supervisor runs"
        child.generation += 1
        child.state = "starting"
        self._nursery.start_soon(self._run_child, child, False)

    async def _run_child(
        self,
        child: ChildRecord,
        waited: bool = True,
        *,
        task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one incarnation of a child in its own cancel scope and report how it ended.

        Error handling: before `started()` every error propagates, so `nursery.start()` raises it;
        started by `_start_soon` (`waited` false), such an error is reported (`ChildExited`) and
        the child forgotten instead, since nobody waits to hear it.
        After it, a crash (an `Exception`, groups of them included) is recorded and handed to the
        restart loop instead of cancelling the nursery; `KeyboardInterrupt`, `SystemExit` and
        foreign `Cancelled` are not crashes and propagate.
        """
        if not waited and self._children.get(child.spec.id) is not child:
            return  # terminated before its task first ran
        spec = child.spec
        watchdog_s = spec.watchdog_s
        liveness = None if watchdog_s is None else Liveness(watchdog_s, now=trio.current_time())
        # Only `nursery.start` can leave the child's task elsewhere than in our nursery.
        task = trio.lowlevel.current_task() if waited else None
        run = child.incarnation = Incarnation(self, child, task_status, liveness, task)
        del task_status  # only `run` holds it, and lets go of it once started
        try:
            with run.scope:
                if liveness is None:
                    await spec.start(*spec.args, task_status=run)
                else:
                    await spec.start(*spec.args, task_status=run, liveness=liveness)
        # A group is an Exception exactly when every member is one, so these two clauses tell
        # crashes from the rest without unwrapping anything; a mixed group is not a crash.
        except Exception as exc:
            self._child_exited(run, exc)
            if not run.is_started:
                if waited:
                    raise
                self._forget(child)
        except BaseException as exc:
            self._child_exited(run, exc)
            raise
        else:
            self._child_exited(run, None)
        finally:
            run.end()

    def _child_started(self, run: Incarnation) -> bool:
        """A child called `started()`: supervise it from now on; False if nobody can."""
        nursery = self._nursery
        if nursery is None or (run.task is not None and run.task.parent_nursery is not nursery):
            return False  # start() was cancelled: trio left the child where it was, to be cancelled
        run.task = None  # not needed any more: let go of it
        child, scope, liveness = run.child, run.scope, run.liveness
        if self._closing:
            scope.cancel()  # arrived while we shut down: stop it rather than leave it behind
        else:
            # From now on only the supervisor cancels the child, so shutdown can go in order.
            scope.shield = True
            if liveness is not None:
                liveness.beat()  # the watch starts now: starting up is not watched
                nursery.start_soon(self._watch, run, liveness)
        child.state = "running"
        now = child.started_at = trio.current_time()
        self._emit(ChildStarted(supervisor=self.name, at=now, child_id=child.spec.id))
        return True

    def _child_exited(self, run: Incarnation, error: BaseException | None) -> None:
        child, generation, scope, started = run.child, run.generation, run.scope, run.is_started
        going_down = error is not None and not isinstance(error, Exception)
        hung = child.hung_generation == generation
        if hung and not going_down:
            reason = HUNG  # what it raised on being cancelled is only a symptom
        elif error is not None:
            reason = describe_exit(error)
        else:
            reason = "shutdown" if scope.cancel_called else "normal"
        abnormal = error is not None or hung
        now = trio.current_time()
        self._emit(
            ChildExited(
                supervisor=self.name,
                at=now,
                child_id=child.spec.id,
                reason=reason,
                abnormal=abnormal,
            )
        )
        if generation != child.generation:
            return  # a left-behind incarnation: the child has moved on
        child.last_exit = reason
        if not started:
            return  # whoever called _start() sees the error and decides
        self._reset_attempts_after_long_run(child, now)
        # A hung child was cancelled by the watchdog, not stopped: it is restarted like a crash.
        stopped_by_us = scope.cancel_called and child.state != "hung"
        if stopped_by_us or going_down:
            child.state = "stopped"  # we stopped it, or it takes the whole supervisor down
        else:
            self._restart_or_retire(child, abnormal=abnormal)

    def _reset_attempts_after_long_run(self, child: ChildRecord, now: float) -> None:
        ran_s = now - (child.started_at or 0.0)
        if ran_s >= self.policy.backoff.reset_after_s:
            child.attempt = 0

    def _restart_or_retire(self, child: ChildRecord, *, abnormal: bool) -> None:
        """After a child ended by itself: ask for its restart, or retire it, as its type says."""
        if should_restart(child.spec.restart, abnormal=abnormal):
            child.state = "restarting"
            self._restart_send.send_nowait(_RestartRequest(child, child.generation))
        else:
            self._retire(child)

    def _retire(self, child: ChildRecord) -> None:
        """Mark a child that will not run again: temporary children are forgotten entirely."""
        child.state = "stopped"
        if child.spec.restart is Restart.TEMPORARY:
            self._forget(child)

    def _forget(self, child: ChildRecord) -> None:
        if self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]

    # --- stopping ------------------------------------------------------------------------------

    def _cancel_child(self, child: ChildRecord) -> None:
        run = child.running()
        if run is not None:
            child.state = "stopping"
            run.scope.cancel()

    async def _wait_stopped(self, child: ChildRecord, deadline: float) -> bool:
        """Wait until `child` ends or `deadline`; past it, report it unkillable and move on.

        Returns True when the child ended in time.
        """
        run = child.running()
        if run is None:
            return True
        with trio.move_on_at(deadline) as waiting:
            await run.ended().wait()
        if waiting.cancelled_caught:
            timeout_s = child.spec.shutdown_timeout_s
            self._emit(
                ShutdownTimedOut(**self._stamp(), child_id=child.spec.id, timeout_s=timeout_s)
            )
            return False
        return True

    async def _stop_child(self, child: ChildRecord) -> None:
        """Cancel one child and wait for it, at most its `shutdown_timeout_s`."""
        if not child.is_alive():
            return
        self._cancel_child(child)
        await self._wait_stopped(child, trio.current_time() + child.spec.shutdown_timeout_s)

    # --- the watchdog --------------------------------------------------------------------------

    async def _watch(self, run: Incarnation, liveness: Liveness) -> None:
        """Watch one incarnation of a watched child; once it is hung, cancel it and restart it.

        Runs in the supervisor's nursery beside the child and ends with it. A hung child that
        ends once cancelled is restarted by `_child_exited`, like any child that ended by itself.
        One that outlives its `shutdown_timeout_s` too is reported (`ShutdownTimedOut`), left
        behind as a stale incarnation, and restarted all the same: a hang is what the watchdog
        exists to get past.
        """
        child, generation = run.child, run.generation
        silent_for_s = await wait_until_hung(liveness, run.ended())
        if silent_for_s is None or not self._owns_running(child, generation, "running"):
            return
        self._emit(ChildHung(**self._stamp(), child_id=child.spec.id, silent_for_s=silent_for_s))
        child.state = "hung"
        child.hung_generation = generation
        run.scope.cancel()
        deadline = trio.current_time() + child.spec.shutdown_timeout_s
        if await self._wait_stopped(child, deadline):
            return
        if not self._owns_running(child, generation, "hung"):
            return  # the supervisor took over meanwhile (a shutdown, a sibling's restart)
        child.generation += 1  # its exit, whenever it comes, is a stale incarnation's
        child.last_exit = HUNG
        self._reset_attempts_after_long_run(child, trio.current_time())
        self._restart_or_retire(child, abnormal=True)

    def _owns_running(self, child: ChildRecord, generation: int, state: ChildState) -> bool:
        """Whether this incarnation is still the child's, in `state`, with the supervisor open."""
        return not self._closing and child.generation == generation and child.state == state

    # --- restarting ----------------------------------------------------------------------------

    async def _handle_restart_requests(self) -> None:
        """Restart failed children, one request at a time, until cancelled or the budget is spent.

        A backoff delay holds up the requests queued behind it; other work (start_child,
        terminate_child, children running) goes on meanwhile.
        """
        async for request in self._restart_receive:
            child = request.child
            if (
                self._children.get(child.spec.id) is child
                and child.generation == request.generation
                and child.state == "restarting"
            ):
                await self._restart(child)

    async def _restart(self, failed: ChildRecord) -> None:
        """Restart `failed` and the siblings the strategy takes with it, after the backoff delay."""
        self._spend_restart_budget(failed)
        order = list(self._children)
        group = [
            self._children[i] for i in restart_group(self.policy.strategy, order, failed.spec.id)
        ]
        siblings = [child for child in group if child is not failed]
        for sibling in reversed(siblings):
            await self._stop_child(sibling)
        for sibling in siblings:
            if sibling.spec.restart is Restart.TEMPORARY:
                self._retire(sibling)
            else:
                sibling.state = "restarting"
        await trio.sleep(self._schedule_restart(failed))
        for child in group:
            if self._children.get(child.spec.id) is not child or child.state != "restarting":
                continue  # terminated meanwhile
            child.restarts += 1
            try:
                await self._start(child)
            except Exception:
                # Failing to restart is failing again: retry through the loop, which spends budget.
                child.state = "restarting"
                self._restart_send.send_nowait(_RestartRequest(child, child.generation))
                return

    def _spend_restart_budget(self, failed: ChildRecord) -> None:
        """Record one restart; when that exceeds the budget, report it and raise."""
        if not self._intensity.record(trio.current_time()):
            return
        restarts, max_seconds = self._intensity.recent, self.policy.max_seconds
        self._emit(IntensityExceeded(**self._stamp(), restarts=restarts, max_seconds=max_seconds))
        raise RestartIntensityExceeded(
            f"supervisor {self.name!r}: {restarts} restarts within {max_seconds} s "
            f"(at most {self.policy.max_restarts}); "
            f"last: {failed.spec.id!r} ({failed.last_exit})"
        )

    def _schedule_restart(self, failed: ChildRecord) -> float:
        """Pick the backoff delay (in seconds) for `failed`'s next restart and announce it."""
        delay_s = self.policy.backoff.delay_s(failed.attempt, self._rng)
        self._emit(
            RestartScheduled(
                **self._stamp(),
                child_id=failed.spec.id,
                delay_s=delay_s,
                attempt=failed.attempt,
                reason=failed.last_exit or "",
            )
        )
        failed.attempt += 1
        return delay_s

    def _stamp(self) -> EventStamp:
        return {"supervisor": self.name, "at": trio.current_time()}

    def _emit(self, event: SupervisionEvent) -> None:
        if self._events is None:
            return
        try:
            self._events.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped_events += 1
