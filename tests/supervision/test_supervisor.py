"""Tests of sigma.supervision.supervisor and the decisions it uses (sigma.supervision.policy).

Every async test takes `autojump_clock` (trio.testing.MockClock(autojump_threshold=0)), so time is
virtual and jumps whenever every task waits: a test that hangs fails on its `fail_after` instead.
Tests wait on supervision events, never on sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from supervision_observer import HANG_GUARD_S, Observer

from sigma.app import supervisor_policy
from sigma.config import SupervisorConfig
from sigma.errors import RestartIntensityExceeded, StartFailed, TooManyChildren
from sigma.supervision.policy import restart_group, should_restart
from sigma.supervision.supervisor import (
    Backoff,
    ChildCounts,
    ChildExited,
    ChildHung,
    ChildSpec,
    ChildStarted,
    DynamicSupervisor,
    IntensityExceeded,
    Liveness,
    Restart,
    RestartIntensity,
    RestartScheduled,
    ShutdownTimedOut,
    Strategy,
    SupervisionEvent,
    Supervisor,
    SupervisorPolicy,
    describe_exit,
)

Log = list[tuple[str, str]]

NO_JITTER = Backoff(min_s=0.1, max_s=5.0, factor=0.0, reset_after_s=30.0)


# --- helpers -------------------------------------------------------------------------------------


class Worker:
    """A scripted child: logs start/stop, and crashes or returns when the test tells it to."""

    def __init__(self, name: str, log: Log) -> None:
        self.name = name
        self.log = log
        self._send, self._receive = trio.open_memory_channel[str](10)

    def spec(self, restart: Restart = Restart.PERMANENT, **options: object) -> ChildSpec:
        return ChildSpec(self.name, self.run, restart=restart, **options)  # type: ignore[arg-type]

    def crash(self) -> None:
        self._send.send_nowait("crash")

    def finish(self) -> None:
        self._send.send_nowait("return")

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append(("start", self.name))
        task_status.started(self.name)
        try:
            command = await self._receive.receive()
        except trio.Cancelled:
            self.log.append(("stop", self.name))
            raise
        self.log.append((command, self.name))
        if command == "crash":
            raise ValueError(f"{self.name} crashed")


def crashing_after(run_times_s: list[float]) -> Callable[..., Awaitable[None]]:
    """A child that runs `run_times_s[n]` virtual seconds in incarnation n, then raises."""
    incarnations = iter(run_times_s)

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        run_s = next(incarnations, None)
        if run_s is None:
            await trio.sleep_forever()
        await trio.sleep(run_s)
        raise ValueError("boom")

    return child


async def fail_to_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    raise ValueError("no database")


@asynccontextmanager
async def running(supervisor: Supervisor | DynamicSupervisor) -> AsyncIterator[trio.CancelScope]:
    """Run `supervisor` in the background; yield the scope that cancels it; cancel it at the end."""
    run_scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
        with run_scope:
            await supervisor.run(task_status=task_status)

    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            yield run_scope
            run_scope.cancel()


def policy(strategy: Strategy = Strategy.ONE_FOR_ONE, **options: object) -> SupervisorPolicy:
    settings: dict[str, object] = {"max_restarts": 100, "max_seconds": 10.0, "backoff": NO_JITTER}
    settings.update(options)
    return SupervisorPolicy(strategy, **settings)  # type: ignore[arg-type]


# --- pure decisions: Backoff, RestartIntensity, restart types and groups ------------------------


def test_backoff_delays_double_then_stay_capped() -> None:
    delays = [NO_JITTER.delay_s(attempt, random.Random(0)) for attempt in range(9)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert NO_JITTER.delay_s(100_000, random.Random(0)) == 5.0  # no float overflow


@given(
    attempt=st.integers(min_value=0, max_value=2_000),
    seed=st.integers(),
    factor=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_jitter_stays_inside_its_bounds(attempt: int, seed: int, factor: float) -> None:
    backoff = Backoff(min_s=0.1, max_s=5.0, factor=factor)
    base_s = min(5.0, 0.1 * 2.0 ** min(attempt, 10))
    delay_s = backoff.delay_s(attempt, random.Random(seed))
    assert base_s <= delay_s <= base_s * (1 + factor)
    assert 0.1 <= delay_s <= 5.0 * (1 + factor)


@pytest.mark.parametrize(
    "options",
    [
        {"min_s": 0.0},
        {"min_s": -1.0},
        {"min_s": 2.0, "max_s": 1.0},
        {"factor": -0.1},
        {"factor": 1.5},
        {"max_s": float("inf")},
        {"min_s": float("nan")},
    ],
)
def test_backoff_rejects_invalid_values(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)


def test_backoff_rejects_a_negative_attempt() -> None:
    with pytest.raises(ValueError):
        NO_JITTER.delay_s(-1, random.Random(0))


def test_intensity_counts_restarts_inside_the_window_only() -> None:
    intensity = RestartIntensity(max_restarts=2, max_seconds=10.0)
    assert [intensity.record(t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    spread = RestartIntensity(max_restarts=2, max_seconds=10.0)
    assert [spread.record(t) for t in (0.0, 6.0, 12.0, 18.0, 24.0)] == [False] * 5
    with pytest.raises(ValueError):
        spread.record(23.0)  # time must not go backwards


@given(
    max_restarts=st.integers(min_value=0, max_value=6),
    max_seconds=st.floats(min_value=0.01, max_value=100.0),
    gaps_s=st.lists(st.floats(min_value=0.0, max_value=50.0), max_size=40),
)
def test_intensity_matches_a_reference_model(
    max_restarts: int, max_seconds: float, gaps_s: list[float]
) -> None:
    intensity = RestartIntensity(max_restarts, max_seconds)
    times: list[float] = []
    now = 0.0
    for gap_s in gaps_s:
        now += gap_s
        times.append(now)
        in_window = [t for t in times if t >= now - max_seconds]
        assert intensity.record(now) == (len(in_window) > max_restarts)


@pytest.mark.parametrize(
    ("restart", "abnormal", "expected"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
def test_restart_types_follow_otp(restart: Restart, abnormal: bool, expected: bool) -> None:
    assert should_restart(restart, abnormal=abnormal) is expected


def test_restart_groups_per_strategy() -> None:
    order = ["a", "b", "c", "d"]
    assert restart_group(Strategy.ONE_FOR_ONE, order, "b") == ["b"]
    assert restart_group(Strategy.ONE_FOR_ALL, order, "b") == order
    assert restart_group(Strategy.REST_FOR_ONE, order, "b") == ["b", "c", "d"]


def test_policy_from_config() -> None:
    config = SupervisorConfig.model_validate(
        {"strategy": "rest_for_one", "max_restarts": 3, "max_seconds": 7, "backoff": {"max_s": 2}}
    )
    assert supervisor_policy(config) == SupervisorPolicy(
        Strategy.REST_FOR_ONE, 3, 7.0, Backoff(min_s=0.1, max_s=2.0, factor=0.2)
    )


def test_policy_rejects_invalid_budget() -> None:
    with pytest.raises(ValueError):
        SupervisorPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        SupervisorPolicy(max_seconds=0)


def test_describe_exit_names_errors_and_group_members() -> None:
    assert describe_exit(ValueError("boom")) == "ValueError: boom"
    assert describe_exit(KeyboardInterrupt()) == "KeyboardInterrupt"
    group = ExceptionGroup("two", [ValueError("a"), KeyError("b")])
    assert describe_exit(group) == "ExceptionGroup: two [ValueError: a; KeyError: 'b']"
    nested_one = ExceptionGroup("outer", [ExceptionGroup("inner", [OSError(98, "in use")])])
    assert describe_exit(nested_one) == "OSError: [Errno 98] in use"


# --- strategies and restart types ---------------------------------------------------------------

START_ABC = [("start", "a"), ("start", "b"), ("start", "c")]
STOP_CBA = [("stop", "c"), ("stop", "b"), ("stop", "a")]


@pytest.mark.parametrize(
    ("strategy", "after_crash"),
    [
        (Strategy.ONE_FOR_ONE, [("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [("stop", "c"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        (Strategy.REST_FOR_ONE, [("stop", "c"), ("start", "b"), ("start", "c")]),
    ],
)
async def test_strategy_restarts_the_right_children_in_order(
    autojump_clock: trio.testing.MockClock, strategy: Strategy, after_crash: Log
) -> None:
    log: Log = []
    a, b, c = Worker("a", log), Worker("b", log), Worker("c", log)
    observer = Observer()
    supervisor = Supervisor(
        "root", [a.spec(), b.spec(), c.spec()], policy(strategy), events=observer.send
    )
    async with running(supervisor):
        b.crash()
        await observer.wait_for(
            ChildExited, child_id="b", abnormal=True, reason="ValueError: b crashed"
        )
        await observer.wait_for(ChildStarted, child_id=after_crash[-1][1])
        restarted = {name for verb, name in after_crash if verb == "start"}
        assert [info.restarts for info in supervisor.which_children()] == [
            int(name in restarted) for name in "abc"
        ]
        assert [info.state for info in supervisor.which_children()] == ["running"] * 3
    assert log == [*START_ABC, ("crash", "b"), *after_crash, *STOP_CBA]
    assert observer.of(RestartScheduled) == [
        RestartScheduled(
            supervisor="root",
            at=0.0,
            child_id="b",
            delay_s=0.1,
            attempt=0,
            reason="ValueError: b crashed",
        )
    ]


async def test_transient_is_not_restarted_after_a_normal_return(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, t = Worker("a", log), Worker("t", log)
    observer = Observer()
    supervisor = Supervisor(
        "root", [a.spec(), t.spec(Restart.TRANSIENT)], policy(), events=observer.send
    )
    async with running(supervisor):
        t.finish()
        await observer.wait_for(ChildExited, child_id="t", reason="normal", abnormal=False)
        a.crash()  # a later restart proves the loop went past t without restarting it
        await observer.wait_for(ChildStarted, child_id="a")
        infos = {info.id: info for info in supervisor.which_children()}
        assert (infos["t"].state, infos["t"].restarts, infos["t"].last_exit) == (
            "stopped",
            0,
            "normal",
        )
        assert supervisor.count_children() == ChildCounts(
            specs=2, active=1, supervisors=0, workers=2
        )
    assert log.count(("start", "t")) == 1
    assert observer.of(RestartScheduled, child_id="t") == []


async def test_transient_is_restarted_after_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    t = Worker("t", log)
    observer = Observer()
    supervisor = Supervisor("root", [t.spec(Restart.TRANSIENT)], policy(), events=observer.send)
    async with running(supervisor):
        t.crash()
        await observer.wait_for(RestartScheduled, child_id="t")
        await observer.wait_for(ChildStarted, child_id="t")
    assert log == [("start", "t"), ("crash", "t"), ("start", "t"), ("stop", "t")]


async def test_permanent_is_restarted_after_a_normal_return(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    p = Worker("p", log)
    observer = Observer()
    supervisor = Supervisor("root", [p.spec()], policy(), events=observer.send)
    async with running(supervisor):
        p.finish()
        await observer.wait_for(ChildExited, child_id="p", reason="normal")
        await observer.wait_for(ChildStarted, child_id="p")
    assert log == [("start", "p"), ("return", "p"), ("start", "p"), ("stop", "p")]


async def test_temporary_crash_is_not_restarted_and_is_removed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, t = Worker("a", log), Worker("t", log)
    observer = Observer()
    supervisor = Supervisor(
        "root",
        [a.spec(), t.spec(Restart.TEMPORARY)],
        policy(Strategy.ONE_FOR_ALL),
        events=observer.send,
    )
    async with running(supervisor):
        t.crash()
        await observer.wait_for(ChildExited, child_id="t", abnormal=True)
        assert [info.id for info in supervisor.which_children()] == ["a"]
    assert log == [("start", "a"), ("start", "t"), ("crash", "t"), ("stop", "a")]
    assert observer.of(RestartScheduled) == []


async def test_temporary_stopped_by_a_sibling_failure_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, t, c = Worker("a", log), Worker("t", log), Worker("c", log)
    observer = Observer()
    specs = [a.spec(), t.spec(Restart.TEMPORARY), c.spec()]
    supervisor = Supervisor("root", specs, policy(Strategy.ONE_FOR_ALL), events=observer.send)
    async with running(supervisor):
        c.crash()
        await observer.wait_for(ChildExited, child_id="c", abnormal=True)
        await observer.wait_for(ChildStarted, child_id="c")
        assert [info.id for info in supervisor.which_children()] == ["a", "c"]
    assert log == [
        *[("start", "a"), ("start", "t"), ("start", "c"), ("crash", "c")],
        *[("stop", "t"), ("stop", "a"), ("start", "a"), ("start", "c")],
        *[("stop", "c"), ("stop", "a")],
    ]


async def test_crash_as_an_exception_group_is_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    incarnations: list[int] = []

    async def child_with_tasks(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        incarnations.append(1)
        async with trio.open_nursery() as nursery:
            task_status.started()
            if len(incarnations) == 1:
                nursery.start_soon(fail_to_start)
            await trio.sleep_forever()

    observer = Observer()
    supervisor = Supervisor(
        "root", [ChildSpec("g", child_with_tasks)], policy(), events=observer.send
    )
    async with running(supervisor):
        exited = await observer.wait_for(ChildExited, child_id="g")
        await observer.wait_for(ChildStarted, child_id="g")
    assert exited.abnormal
    assert exited.reason == "ValueError: no database"  # its nursery's group of one unwrapped


async def test_a_failed_restart_is_retried_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[str] = []

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append("start")
        if len(starts) == 2:
            raise ValueError("not yet")
        task_status.started()
        if len(starts) == 1:
            raise ValueError("crash")
        await trio.sleep_forever()

    observer = Observer()
    supervisor = Supervisor("root", [ChildSpec("f", flaky)], policy(), events=observer.send)
    async with running(supervisor):
        await observer.wait_for(ChildExited, child_id="f", reason="ValueError: not yet")
        await observer.wait_for(ChildStarted, child_id="f")
        assert supervisor.which_children()[0].restarts == 2
    assert [event.attempt for event in observer.of(RestartScheduled)] == [0, 1]
    assert len(starts) == 3


# --- restart intensity and backoff --------------------------------------------------------------


async def test_crashes_inside_the_window_escalate(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    a = Worker("a", log)
    observer = Observer()
    specs = [a.spec(), ChildSpec("crashy", crashing_after([1.0] * 10))]
    supervisor = Supervisor(
        "root", specs, policy(max_restarts=3, max_seconds=10.0), events=observer.send
    )
    with pytest.raises(RestartIntensityExceeded, match=r"'root': 4 restarts within 10\.0 s"):
        await supervisor.run()
    assert len(observer.of(ChildExited, child_id="crashy", abnormal=True)) == 4
    assert len(observer.of(RestartScheduled)) == 3
    [exceeded] = observer.of(IntensityExceeded)
    assert (exceeded.supervisor, exceeded.restarts, exceeded.max_seconds) == ("root", 4, 10.0)
    assert exceeded.at == pytest.approx(1.0 + 0.1 + 1.0 + 0.2 + 1.0 + 0.4 + 1.0)  # the 4th crash
    assert log == [("start", "a"), ("stop", "a")]
    assert all(info.state == "stopped" for info in supervisor.which_children())


async def test_the_same_crashes_spread_out_do_not_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    specs = [ChildSpec("crashy", crashing_after([5.0] * 4))]
    supervisor = Supervisor(
        "root", specs, policy(max_restarts=3, max_seconds=10.0), events=observer.send
    )
    async with running(supervisor):
        await observer.wait_for(RestartScheduled, attempt=3)
        await observer.wait_for(ChildStarted, child_id="crashy")
        assert supervisor.which_children()[0].restarts == 4
    assert observer.of(IntensityExceeded) == []


async def test_backoff_grows_and_resets_after_a_stable_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    run_times_s = [0.0, 0.0, 0.0, 30.0, 0.0]  # the 4th incarnation runs reset_after_s
    supervisor = Supervisor(
        "root", [ChildSpec("c", crashing_after(run_times_s))], policy(), events=observer.send
    )
    async with running(supervisor):
        for _ in run_times_s:
            await observer.wait_for(RestartScheduled)
        await observer.wait_for(ChildStarted)
    scheduled = observer.of(RestartScheduled)
    assert [event.attempt for event in scheduled] == [0, 1, 2, 0, 1]
    assert [event.delay_s for event in scheduled] == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2])
    started = observer.of(ChildStarted)
    exited = observer.of(ChildExited, abnormal=True)
    waits_s = [nxt.at - exit.at for exit, nxt in zip(exited, started[1:], strict=False)]
    assert waits_s == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2])  # the restart waited its delay


async def test_jittered_delays_use_the_given_rng(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(min_s=1.0, max_s=4.0, factor=0.5)
    observer = Observer()
    supervisor = Supervisor(
        "root",
        [ChildSpec("c", crashing_after([0.0] * 4))],
        policy(backoff=backoff),
        events=observer.send,
        rng=random.Random(42),
    )
    async with running(supervisor):
        for _ in range(4):
            await observer.wait_for(RestartScheduled)
    reference = random.Random(42)
    expected = [backoff.delay_s(attempt, reference) for attempt in range(4)]
    assert [event.delay_s for event in observer.of(RestartScheduled)] == expected
    for attempt, delay_s in enumerate(expected):
        base_s = min(4.0, 2.0**attempt)
        assert base_s <= delay_s <= base_s * 1.5


# --- start and shutdown -------------------------------------------------------------------------


async def test_start_failure_stops_started_siblings_in_reverse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, b, d = Worker("a", log), Worker("b", log), Worker("d", log)
    observer = Observer()
    specs = [a.spec(), b.spec(), ChildSpec("c", fail_to_start), d.spec()]
    supervisor = Supervisor("root", specs, events=observer.send)
    with pytest.raises(StartFailed, match="'c' failed to start: ValueError: no database") as caught:
        await supervisor.run()
    assert isinstance(caught.value.__cause__, ValueError)
    assert log == [("start", "a"), ("start", "b"), ("stop", "b"), ("stop", "a")]
    assert observer.of(ChildExited, child_id="c") == [
        ChildExited(
            supervisor="root", at=0.0, child_id="c", reason="ValueError: no database", abnormal=True
        )
    ]


async def test_a_child_that_never_calls_started_is_a_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def returns_early(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        return None

    supervisor = Supervisor("root", [ChildSpec("early", returns_early)])
    with pytest.raises(StartFailed) as caught:
        await supervisor.run()
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_an_unkillable_child_does_not_hold_up_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, c = Worker("a", log), Worker("c", log)
    release = trio.Event()

    async def stubborn(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with trio.CancelScope(shield=True):
            await release.wait()

    observer = Observer()
    specs = [a.spec(), ChildSpec("b", stubborn, shutdown_timeout_s=2.0), c.spec()]
    supervisor = Supervisor("root", specs, events=observer.send)
    async with running(supervisor) as run_scope:
        cancelled_at = trio.current_time()
        run_scope.cancel()
        c_exit = await observer.wait_for(ChildExited, child_id="c")
        timed_out = await observer.wait_for(ShutdownTimedOut, child_id="b")
        a_exit = await observer.wait_for(ChildExited, child_id="a")
        assert not release.is_set()  # a stopped while b was still stuck
        assert c_exit.at == cancelled_at
        assert timed_out == ShutdownTimedOut(
            supervisor="root", at=cancelled_at + 2.0, child_id="b", timeout_s=2.0
        )
        assert a_exit.at == cancelled_at + 2.0
        assert [info.state for info in supervisor.which_children()] == [
            "stopped",
            "stopping",
            "stopped",
        ]
        release.set()
        await observer.wait_for(ChildExited, child_id="b", reason="shutdown")
    assert log == [("start", "a"), ("start", "c"), ("stop", "c"), ("stop", "a")]


async def test_keyboard_interrupt_in_a_child_propagates_without_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a = Worker("a", log)

    async def interrupted(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(("start", "k"))
        task_status.started()
        await trio.sleep(1.0)
        raise KeyboardInterrupt

    observer = Observer()
    supervisor = Supervisor("root", [a.spec(), ChildSpec("k", interrupted)], events=observer.send)
    with pytest.RaisesGroup(KeyboardInterrupt):
        await supervisor.run()
    assert log == [("start", "a"), ("start", "k"), ("stop", "a")]
    assert observer.of(RestartScheduled) == []
    assert observer.of(ChildExited, child_id="k")[0].reason == "KeyboardInterrupt"


async def test_events_are_dropped_not_waited_for(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    events_send, events_receive = trio.open_memory_channel[SupervisionEvent](1)
    specs = [Worker("a", log).spec(), Worker("b", log).spec()]
    supervisor = Supervisor("root", specs, events=events_send)
    async with running(supervisor):
        assert supervisor.dropped_events == 1  # b's ChildStarted did not fit
        assert isinstance(events_receive.receive_nowait(), ChildStarted)
        events_receive.close()  # the observer went away: still no trouble
    assert supervisor.dropped_events == 3  # and both ChildExited went nowhere
    assert log == [("start", "a"), ("start", "b"), ("stop", "b"), ("stop", "a")]
    with pytest.raises(trio.BrokenResourceError):  # not ClosedResourceError: we never closed it
        events_send.send_nowait(ChildStarted(supervisor="x", at=0.0, child_id="x"))


async def test_child_info_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    inner = Supervisor("inner", [Worker("w", log).spec()])
    specs = [Worker("a", log).spec(), ChildSpec("inner", inner.run, supervisor=True)]
    supervisor = Supervisor("root", specs)
    assert supervisor.count_children() == ChildCounts(specs=2, active=0, supervisors=1, workers=1)
    async with running(supervisor):
        infos = supervisor.which_children()
        assert [(i.id, i.state, i.restarts, i.supervisor) for i in infos] == [
            ("a", "running", 0, False),
            ("inner", "running", 0, True),
        ]
        assert all(info.started_at == 0.0 and info.last_exit is None for info in infos)
        assert supervisor.count_children() == ChildCounts(
            specs=2, active=2, supervisors=1, workers=1
        )
    assert [info.state for info in supervisor.which_children()] == ["stopped", "stopped"]
    assert log == [("start", "a"), ("start", "w"), ("stop", "w"), ("stop", "a")]


def test_duplicate_child_ids_are_refused() -> None:
    async def child() -> None: ...

    with pytest.raises(ValueError, match="unique"):
        Supervisor("root", [ChildSpec("x", child), ChildSpec("x", child)])


# --- nested supervisors -------------------------------------------------------------------------


async def test_inner_intensity_exceeded_makes_the_parent_restart_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    inner = Supervisor(
        "inner",
        [ChildSpec("crashy", crashing_after([0.0, 0.0]))],  # the third incarnation stays up
        policy(max_restarts=1),
        events=observer.send,
    )
    outer = Supervisor(
        "outer", [ChildSpec("inner", inner.run, supervisor=True)], policy(), events=observer.send
    )
    async with running(outer):
        await observer.wait_for(IntensityExceeded, supervisor="inner")
        exited = await observer.wait_for(ChildExited, supervisor="outer", child_id="inner")
        await observer.wait_for(ChildStarted, supervisor="outer", child_id="inner")
        assert exited.abnormal and exited.reason.startswith("RestartIntensityExceeded: ")
        assert outer.which_children()[0].restarts == 1
        assert inner.which_children()[0].state == "running"
    assert observer.of(IntensityExceeded, supervisor="outer") == []


async def test_repeated_inner_escalation_escalates_the_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    inner = Supervisor(
        "inner",
        [ChildSpec("crashy", crashing_after([0.0] * 100))],
        policy(max_restarts=1),
        events=observer.send,
    )
    outer = Supervisor(
        "outer",
        [ChildSpec("inner", inner.run, supervisor=True)],
        policy(max_restarts=1),
        events=observer.send,
    )
    with pytest.raises(RestartIntensityExceeded, match="'outer'"):
        await outer.run()
    assert len(observer.of(IntensityExceeded, supervisor="inner")) == 2
    assert len(observer.of(IntensityExceeded, supervisor="outer")) == 1


# --- dynamic supervisor -------------------------------------------------------------------------


async def test_dynamic_children_start_and_terminate(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    observer = Observer()
    sessions = DynamicSupervisor("sessions", events=observer.send)
    async with running(sessions):
        assert await sessions.start_child(Worker("s1", log).spec(Restart.TEMPORARY)) == "s1"
        assert await sessions.start_child(Worker("s2", log).spec(Restart.TEMPORARY)) == "s2"
        assert sessions.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)
        await sessions.terminate_child("s1")
        assert [info.id for info in sessions.which_children()] == ["s2"]
        with pytest.raises(KeyError):
            await sessions.terminate_child("s1")
        with pytest.raises(ValueError, match="already has"):
            await sessions.start_child(Worker("s2", log).spec())
    assert log == [("start", "s1"), ("start", "s2"), ("stop", "s1"), ("stop", "s2")]
    assert [event.reason for event in observer.of(ChildExited)] == ["shutdown", "shutdown"]


async def test_dynamic_child_crash_leaves_siblings_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    s1, s2 = Worker("s1", log), Worker("s2", log)
    observer = Observer()
    sessions = DynamicSupervisor("sessions", events=observer.send)
    async with running(sessions):
        await sessions.start_child(s1.spec(Restart.TEMPORARY))
        await sessions.start_child(s2.spec(Restart.TEMPORARY))
        s1.crash()
        await observer.wait_for(ChildExited, child_id="s1", abnormal=True)
        assert [(i.id, i.state) for i in sessions.which_children()] == [("s2", "running")]
    assert log == [("start", "s1"), ("start", "s2"), ("crash", "s1"), ("stop", "s2")]
    assert observer.of(RestartScheduled) == []


async def test_dynamic_permanent_child_is_restarted(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    p = Worker("p", log)
    observer = Observer()
    sessions = DynamicSupervisor("sessions", policy=policy(), events=observer.send)
    async with running(sessions):
        await sessions.start_child(p.spec())
        p.crash()
        await observer.wait_for(ChildStarted, child_id="p")
        await observer.wait_for(ChildStarted, child_id="p")
        assert sessions.which_children()[0].restarts == 1
    assert log == [("start", "p"), ("crash", "p"), ("start", "p"), ("stop", "p")]


async def test_dynamic_supervisor_refuses_past_max_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sessions = DynamicSupervisor("sessions", max_children=2)
    async with running(sessions):
        await sessions.start_child(Worker("s1", log).spec(Restart.TEMPORARY))
        await sessions.start_child(Worker("s2", log).spec(Restart.TEMPORARY))
        with pytest.raises(TooManyChildren):
            await sessions.start_child(Worker("s3", log).spec(Restart.TEMPORARY))
        assert ("start", "s3") not in log
        assert sessions.count_children().specs == 2
        await sessions.terminate_child("s1")
        await sessions.start_child(Worker("s3", log).spec(Restart.TEMPORARY))
    assert ("start", "s3") in log


async def test_dynamic_start_raises_what_the_child_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions = DynamicSupervisor("sessions")
    async with running(sessions):
        with pytest.raises(ValueError, match="no database"):
            await sessions.start_child(ChildSpec("bad", fail_to_start))
        assert sessions.which_children() == []


async def test_dynamic_start_soon_holds_the_place_at_once_and_supervises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    observer = Observer()
    sessions = DynamicSupervisor("sessions", max_children=2, events=observer.send)
    async with running(sessions):
        sessions.start_child_soon(Worker("s1", log).spec(Restart.TEMPORARY))
        assert sessions.child_count() == 1
        assert log == []  # not run yet: nothing waited for it
        with pytest.raises(ValueError, match="already has"):
            sessions.start_child_soon(Worker("s1", log).spec(Restart.TEMPORARY))
        sessions.start_child_soon(Worker("s2", log).spec(Restart.TEMPORARY))
        with pytest.raises(TooManyChildren):
            sessions.start_child_soon(Worker("s3", log).spec(Restart.TEMPORARY))
        await observer.wait_for(ChildStarted, child_id="s2")
        assert [(i.id, i.state) for i in sessions.which_children()] == [
            ("s1", "running"),
            ("s2", "running"),
        ]
    assert sorted(log) == [("start", "s1"), ("start", "s2"), ("stop", "s1"), ("stop", "s2")]
    assert [event.reason for event in observer.of(ChildExited)] == ["shutdown", "shutdown"]


async def test_dynamic_start_soon_reports_a_failure_before_started_and_forgets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    observer = Observer()
    sessions = DynamicSupervisor("sessions", events=observer.send)
    async with running(sessions):
        sessions.start_child_soon(ChildSpec("bad", fail_to_start))
        exited = await observer.wait_for(ChildExited, child_id="bad")
        assert exited.abnormal and "no database" in exited.reason
        assert sessions.which_children() == []
        # The supervisor goes on: nothing was raised into its nursery.
        assert await sessions.start_child(Worker("s1", log).spec(Restart.TEMPORARY)) == "s1"
    assert observer.of(RestartScheduled) == []


async def test_dynamic_start_soon_terminated_before_it_ran_never_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sessions = DynamicSupervisor("sessions")
    async with running(sessions):
        sessions.start_child_soon(Worker("s1", log).spec(Restart.TEMPORARY))
        await sessions.terminate_child("s1")
        await trio.sleep(1.0)
        assert sessions.which_children() == []
    assert log == []


async def test_dynamic_supervisor_must_be_running(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    with pytest.raises(RuntimeError, match="not running"):
        await DynamicSupervisor("sessions").start_child(Worker("s", log).spec())


async def test_dynamic_supervisor_restarts_one_for_one_whatever_the_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    s1, s2 = Worker("s1", log), Worker("s2", log)
    observer = Observer()
    sessions = DynamicSupervisor(
        "sessions", policy=policy(Strategy.ONE_FOR_ALL), events=observer.send
    )
    assert sessions.policy.strategy is Strategy.ONE_FOR_ONE
    async with running(sessions):
        await sessions.start_child(s1.spec())
        await sessions.start_child(s2.spec())
        s1.crash()
        await observer.wait_for(ChildExited, child_id="s1", abnormal=True)
        await observer.wait_for(ChildStarted, child_id="s1")
    assert log[:4] == [("start", "s1"), ("start", "s2"), ("crash", "s1"), ("start", "s1")]
    assert sorted(log[4:]) == [("stop", "s1"), ("stop", "s2")]  # stopped together, any order


async def test_dynamic_shutdown_stops_children_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def stubborn(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with trio.CancelScope(shield=True):
            await release.wait()

    observer = Observer()
    sessions = DynamicSupervisor("sessions", events=observer.send)
    async with running(sessions) as run_scope:
        for name in ("s1", "s2"):
            await sessions.start_child(ChildSpec(name, stubborn, shutdown_timeout_s=3.0))
        cancelled_at = trio.current_time()
        run_scope.cancel()
        await observer.wait_for(ShutdownTimedOut, child_id="s1")
        await observer.wait_for(ShutdownTimedOut, child_id="s2")
        assert [event.at for event in observer.of(ShutdownTimedOut)] == [cancelled_at + 3.0] * 2
        release.set()


async def test_cancelling_a_run_during_start_stops_the_started_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a, c = Worker("a", log), Worker("c", log)

    async def slow_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append(("start", "slow"))
        try:
            await trio.sleep_forever()
        finally:
            log.append(("stop", "slow"))

    supervisor = Supervisor("root", [a.spec(), ChildSpec("slow", slow_start), c.spec()])
    with trio.move_on_after(5.0) as waited:
        await supervisor.run()
    assert waited.cancelled_caught
    assert log == [("start", "a"), ("start", "slow"), ("stop", "slow"), ("stop", "a")]


async def test_started_after_the_start_was_cancelled_is_not_adopted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    a = Worker("a", log)

    async def late(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(10.0)
            task_status.started()  # trio keeps it under the cancelled start(): not ours to shield
        await trio.sleep_forever()

    observer = Observer()
    supervisor = Supervisor("root", [a.spec(), ChildSpec("late", late)], events=observer.send)
    with trio.move_on_after(5.0):
        await supervisor.run()
    assert trio.current_time() == 10.0
    assert observer.of(ChildStarted, child_id="late") == []
    reasons = [event.reason for event in observer.of(ChildExited)]
    assert reasons[0].startswith("Cancelled") and reasons[1:] == ["shutdown"]
    assert log == [("start", "a"), ("stop", "a")]


async def test_one_for_all_restarts_a_transient_that_had_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    t, b = Worker("t", log), Worker("b", log)
    observer = Observer()
    specs = [t.spec(Restart.TRANSIENT), b.spec()]
    supervisor = Supervisor("root", specs, policy(Strategy.ONE_FOR_ALL), events=observer.send)
    async with running(supervisor):
        t.finish()
        await observer.wait_for(ChildExited, child_id="t", reason="normal")
        b.crash()
        await observer.wait_for(ChildExited, child_id="b", abnormal=True)
        await observer.wait_for(ChildStarted, child_id="b")
    assert log == [
        *[("start", "t"), ("start", "b"), ("return", "t"), ("crash", "b")],
        *[("start", "t"), ("start", "b"), ("stop", "b"), ("stop", "t")],
    ]


# --- the public types live in sigma.supervision.spec; the watchdog works for dynamic children --


def test_the_public_types_are_re_exported_unchanged() -> None:
    import sigma.supervision.spec as types
    import sigma.supervision.supervisor as supervisor

    for name in ["ChildSpec", "ChildInfo", "ChildCounts", "ChildHung", "SupervisionEvent"]:
        assert getattr(supervisor, name) is getattr(types, name)
    assert supervisor.describe_exit is types.describe_exit


async def test_a_dynamic_child_can_be_watched_too(autojump_clock: trio.testing.MockClock) -> None:
    async def hangs(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    observer = Observer()
    sessions = DynamicSupervisor("sessions", policy=policy(), events=observer.send)
    async with running(sessions):
        await sessions.start_child(ChildSpec("s1", hangs, watchdog_s=5.0))
        hung = await observer.wait_for(ChildHung, child_id="s1")
        assert hung.at == 5.0
        await observer.wait_for(ChildStarted, child_id="s1")
        assert [(i.id, i.restarts, i.last_exit) for i in sessions.which_children()] == [
            ("s1", 1, "hung")
        ]
