"""Tests of the actor watchdog: `sigma.supervision.watchdog`, and how a supervisor acts on a
hung child.

Async tests run on `autojump_clock`, so deadlines are exact virtual times and a test that hangs
fails on its `fail_after` instead. Tests wait on supervision events, never on sleeps.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from supervision_observer import HANG_GUARD_S, Observer

from sigma.app import Endpoints, build_tree, poller_period_s, watchdog_s
from sigma.config import Config, HeartbeatConfig, HubConfig, PollerConfig
from sigma.errors import RestartIntensityExceeded
from sigma.health import HealthBoard
from sigma.heartbeat import run_heartbeat
from sigma.hub.loop import run_hub
from sigma.hub.messages import HubMessage
from sigma.metrics import Metrics
from sigma.poller.actor import run_poller
from sigma.supervision.supervisor import (
    HUNG,
    Backoff,
    ChildExited,
    ChildHung,
    ChildSpec,
    ChildStarted,
    Liveness,
    Restart,
    RestartScheduled,
    ShutdownTimedOut,
    Strategy,
    SupervisionEvent,
    Supervisor,
    SupervisorPolicy,
)
from sigma.supervision.watchdog import wait_until_hung

WATCHDOG_S = 10.0
NO_JITTER = Backoff(min_s=0.1, max_s=5.0, factor=0.0, reset_after_s=30.0)


def policy(strategy: Strategy = Strategy.ONE_FOR_ONE, **options: Any) -> SupervisorPolicy:
    settings: dict[str, Any] = {"max_restarts": 100, "max_seconds": 10.0, "backoff": NO_JITTER}
    settings.update(options)
    return SupervisorPolicy(strategy, **settings)


@asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            yield supervisor
            nursery.cancel_scope.cancel()


Child = Callable[..., Awaitable[None]]


def hanging_after(beats: int, *, period_s: float = 1.0, shielded_s: float | None = None) -> Child:
    """A watched child that beats `beats` times, `period_s` apart, in its first incarnation,
    then hangs: forever (cancellable), or shielded for `shielded_s`. Later incarnations beat."""
    incarnations = iter(range(1_000))

    async def child(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        first = next(incarnations) == 0
        task_status.started()
        for _ in range(beats if first else 1_000_000):
            await trio.sleep(period_s)
            liveness.beat()
        if shielded_s is None:
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await trio.sleep(shielded_s)

    return child


# --- Liveness, the decision --------------------------------------------------------------------


def test_a_busy_actor_is_hung_exactly_at_its_deadline() -> None:
    liveness = Liveness(10.0, now=100.0)
    assert not liveness.hung(109.999)
    assert liveness.hung(110.0)
    assert liveness.silent_for_s(112.5) == 12.5
    assert liveness.next_check_at(105.0) == 110.0


def test_an_idle_actor_is_never_hung_and_is_looked_at_once_a_period() -> None:
    liveness = Liveness(10.0, now=0.0)
    liveness.idle()
    assert not liveness.hung(1e9)
    assert liveness.next_check_at(500.0) == 510.0


def test_an_unwatched_liveness_never_hangs() -> None:
    liveness = Liveness.unwatched()
    assert liveness.timeout_s == math.inf
    assert not liveness.hung(1e12)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, math.nan])
def test_liveness_and_spec_reject_a_non_positive_watchdog(timeout_s: float) -> None:
    with pytest.raises(ValueError):
        Liveness(timeout_s, now=0.0)
    with pytest.raises(ValueError):
        ChildSpec("x", hanging_after(0), watchdog_s=timeout_s)


async def test_beat_stamps_trio_time_and_ends_idleness(
    autojump_clock: trio.testing.MockClock,
) -> None:
    liveness = Liveness(5.0, now=trio.current_time())
    liveness.idle()
    await trio.sleep(7.0)
    liveness.beat()
    assert liveness.last_beat_at == trio.current_time()
    assert not liveness.is_idle


async def test_wait_until_hung_wakes_at_deadlines_only_and_stops_when_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    liveness = Liveness(10.0, now=trio.current_time())
    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def beat_three_times() -> None:
            for _ in range(3):
                await trio.sleep(4.0)
                liveness.beat()

        nursery.start_soon(beat_three_times)
        silent_for_s = await wait_until_hung(liveness, done)
    assert silent_for_s == pytest.approx(10.0)
    assert trio.current_time() == pytest.approx(22.0)  # the last beat at 12 s, + 10 s

    done.set()
    assert await wait_until_hung(Liveness(1.0, now=-100.0), done) is None


# --- the supervisor acting on it ---------------------------------------------------------------


async def test_unwatched_children_get_no_liveness_and_watched_ones_get_theirs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received: dict[str, object] = {}

    async def child(
        name: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, **kw: object
    ) -> None:
        received[name] = kw.get("liveness")
        task_status.started()
        if isinstance(liveness := kw.get("liveness"), Liveness):
            liveness.idle()
        await trio.sleep_forever()

    specs = [
        ChildSpec("plain", child, ("plain",)),
        ChildSpec("watched", child, ("watched",), watchdog_s=7.0),
    ]
    async with running(Supervisor("root", specs, policy())):
        await trio.sleep(100.0)
    assert received["plain"] is None
    watched = received["watched"]
    assert isinstance(watched, Liveness) and watched.timeout_s == 7.0


async def test_a_hung_child_is_announced_cancelled_and_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    spec = ChildSpec("worker", hanging_after(3), watchdog_s=WATCHDOG_S)
    supervisor = Supervisor("root", [spec], policy(), events=observer.send)
    async with running(supervisor):
        hung = await observer.wait_for(ChildHung, child_id="worker")
        # The last beat was at 3 s; the watchdog fires exactly WATCHDOG_S later.
        assert hung.at == pytest.approx(3.0 + WATCHDOG_S)
        assert hung.silent_for_s == pytest.approx(WATCHDOG_S)
        exited = await observer.wait_for(ChildExited, child_id="worker")
        assert (exited.reason, exited.abnormal) == (HUNG, True)
        scheduled = await observer.wait_for(RestartScheduled, child_id="worker")
        assert scheduled.reason == HUNG
        await observer.wait_for(ChildStarted, child_id="worker")
        [info] = supervisor.which_children()
        assert (info.state, info.restarts, info.last_exit) == ("running", 1, HUNG)
        # The new incarnation beats: watched for a long while, it is never taken for hung.
        await trio.sleep(1000.0)
    assert len(observer.of(ChildHung)) == 1


async def test_a_child_that_beats_or_idles_is_never_hung(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox_send, inbox_receive = trio.open_memory_channel[int](1)

    async def waits_on_its_input(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            liveness.idle()
            await inbox_receive.receive()
            liveness.beat()
            await trio.sleep(WATCHDOG_S / 2)  # busy, but within its deadline

    observer = Observer()
    specs = [
        ChildSpec("beating", hanging_after(1_000_000, period_s=WATCHDOG_S - 0.001), watchdog_s=10),
        ChildSpec("idle", waits_on_its_input, watchdog_s=WATCHDOG_S),
    ]
    async with running(Supervisor("root", specs, policy(), events=observer.send)):
        await trio.sleep(500.0)  # idle for 50 deadlines
        for _ in range(20):
            await inbox_send.send(1)
        await trio.sleep(500.0)
    assert observer.of(ChildHung) == []
    assert observer.of(RestartScheduled) == []


async def test_an_actor_busy_after_idling_is_hung_a_deadline_after_its_last_beat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox_send, inbox_receive = trio.open_memory_channel[int](1)

    async def stuck_on_second_message(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        liveness.idle()
        await inbox_receive.receive()
        liveness.beat()
        await trio.sleep_forever()  # stuck handling it

    observer = Observer()
    spec = ChildSpec("a", stuck_on_second_message, restart=Restart.TEMPORARY, watchdog_s=10.0)
    async with running(Supervisor("root", [spec], policy(), events=observer.send)) as sup:
        await trio.sleep(95.0)
        await inbox_send.send(1)
        hung = await observer.wait_for(ChildHung, child_id="a")
        assert hung.at == pytest.approx(105.0)
        # A temporary child is not restarted, even when hung: it is gone.
        await observer.wait_for(ChildExited, child_id="a", reason=HUNG)
        assert sup.which_children() == []
    assert observer.of(RestartScheduled) == []


async def test_a_hung_child_that_shields_itself_is_left_behind_and_restarted_anyway(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    spec = ChildSpec(
        "stubborn",
        hanging_after(0, shielded_s=100.0),
        shutdown_timeout_s=2.0,
        watchdog_s=WATCHDOG_S,
    )
    supervisor = Supervisor("root", [spec], policy(), events=observer.send)
    async with running(supervisor):
        await observer.wait_for(ChildHung, child_id="stubborn")
        timed_out = await observer.wait_for(ShutdownTimedOut, child_id="stubborn")
        assert (timed_out.at, timed_out.timeout_s) == (pytest.approx(WATCHDOG_S + 2.0), 2.0)
        scheduled = await observer.wait_for(RestartScheduled, child_id="stubborn")
        assert scheduled.reason == HUNG
        await observer.wait_for(ChildStarted, child_id="stubborn")
        # The old incarnation's exit, when it comes, is a stale one's: the new one runs on.
        stale = await observer.wait_for(ChildExited, child_id="stubborn")
        assert (stale.reason, stale.at) == (HUNG, pytest.approx(100.0))
        [info] = supervisor.which_children()
        assert (info.state, info.restarts) == ("running", 1)
    assert len(observer.of(ChildHung)) == 1


async def test_a_hang_restarts_the_strategy_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()

    async def bystander(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    specs = [
        ChildSpec("first", bystander),
        ChildSpec("hangs", hanging_after(0), watchdog_s=WATCHDOG_S),
        ChildSpec("last", bystander),
    ]
    supervisor = Supervisor("root", specs, policy(Strategy.REST_FOR_ONE), events=observer.send)
    async with running(supervisor):
        await observer.wait_for(ChildHung, child_id="hangs")
        await observer.wait_for(ChildStarted, child_id="last")
        assert [(i.id, i.state, i.restarts) for i in supervisor.which_children()] == [
            ("first", "running", 0),
            ("hangs", "running", 1),
            ("last", "running", 1),
        ]


async def test_repeated_hangs_spend_the_restart_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def always_hangs(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    observer = Observer()
    spec = ChildSpec("hangs", always_hangs, watchdog_s=1.0)
    supervisor = Supervisor(
        "root", [spec], policy(max_restarts=2, max_seconds=60.0), events=observer.send
    )
    with (
        trio.fail_after(HANG_GUARD_S),
        pytest.raises(RestartIntensityExceeded, match="'hangs' \\(hung\\)"),
    ):
        await supervisor.run()
    assert len(observer.of(ChildHung)) == 3


async def test_a_shutdown_while_a_child_is_hung_stops_it_without_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observer = Observer()
    spec = ChildSpec(
        "stubborn",
        hanging_after(0, shielded_s=30.0),
        shutdown_timeout_s=60.0,
        watchdog_s=WATCHDOG_S,
    )
    supervisor = Supervisor("root", [spec], policy(), events=observer.send)
    async with running(supervisor):
        await observer.wait_for(ChildHung, child_id="stubborn")
        assert supervisor.which_children()[0].state == "hung"
        assert supervisor.count_children().active == 1
    # Leaving `running` cancelled the supervisor while the child was still being cancelled.
    assert [(i.state, i.restarts) for i in supervisor.which_children()] == [("stopped", 0)]
    assert observer.of(RestartScheduled) == []
    assert observer.of(ChildExited, child_id="stubborn") == [
        ChildExited(supervisor="root", at=30.0, child_id="stubborn", reason=HUNG, abnormal=True)
    ]


# --- the real actors under their watchdogs ------------------------------------------------------


async def test_the_tree_watches_its_looping_actors_with_generous_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config()
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](1)
    events_send, _ = trio.open_memory_channel[SupervisionEvent](1)
    root, _sessions = build_tree(
        config,
        health=HealthBoard(),
        endpoints=Endpoints(),
        hub_send=hub_send,
        hub_receive=hub_receive,
        events=events_send,
        metrics=Metrics(started_at=0.0),
    )
    watchdogs = {child.id: child.watchdog_s for child in root.which_children()}
    assert watchdogs == {
        "engine": None,
        "hub": 10.0,
        "sessions": None,
        "gateway": None,
        "poller": 36.0,  # 3 x (10 s, the longest interval, + 2 s, the call's timeout)
        "heartbeat": 45.0,  # 3 x 15 s
    }
    assert watchdog_s(1.0) == 10.0
    assert poller_period_s(PollerConfig(intervals_s={}, retry_max_s=30.0)) == 30.0


async def test_quiet_busy_and_blocked_actors_are_not_taken_for_hung(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub idles on its inbox; the heartbeat and the poller are blocked on a full inbox
    for far longer than their watchdogs (the hub is not reading); then all run freely."""
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](1)
    unreachable = httpx.MockTransport(lambda request: httpx.Response(503))
    poller_config = PollerConfig(intervals_s={"system.status": 1.0})
    poller = functools.partial(
        run_poller, transport=unreachable, rng=random.Random(1), health=HealthBoard()
    )
    hub_gate = trio.Event()

    async def hub_after_gate(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        liveness.idle()  # not reading its inbox yet: as if slow, but not hung itself
        await hub_gate.wait()
        await run_hub(hub_receive, HubConfig(), heartbeat_interval_s=1.0, liveness=liveness)

    observer = Observer()
    specs = [
        ChildSpec("hub", hub_after_gate, watchdog_s=watchdog_s(0.0)),
        ChildSpec(
            "poller",
            poller,
            (poller_config, Endpoints(engine_url="http://engine.test/rpc"), hub_send),
            watchdog_s=watchdog_s(poller_period_s(poller_config)),
        ),
        ChildSpec(
            "heartbeat",
            run_heartbeat,
            (HeartbeatConfig(interval_s=1.0), hub_send),
            watchdog_s=watchdog_s(1.0),
        ),
    ]
    async with running(Supervisor("root", specs, policy(), events=observer.send)):
        await trio.sleep(600.0)
        hub_gate.set()
        await trio.sleep(600.0)
    assert observer.of(ChildHung) == []
    assert observer.of(RestartScheduled) == []
