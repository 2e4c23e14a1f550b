"""The hub's intake (`sigma.hub.intake`): producers wait for room, the publish API is refused
after a bounded wait, and an idle hub handles a publish on the publisher's task."""

from __future__ import annotations

import functools
import random

import httpx
import pytest
import trio
import trio.testing
from helpers import eventually
from supervision_observer import HANG_GUARD_S, Observer

from sigma.app import Endpoints, poller_period_s, watchdog_s
from sigma.config import HeartbeatConfig, HubConfig, PollerConfig
from sigma.faults import Faults, FaultSpec
from sigma.health import HealthBoard
from sigma.heartbeat import run_heartbeat
from sigma.hub.actor import HubActor
from sigma.hub.intake import HubIntake, Overloaded
from sigma.hub.loop import run_hub
from sigma.hub.messages import HubMessage, Leave, PublishHeartbeat
from sigma.poller.actor import run_poller
from sigma.protocol.server_messages import Event, make_event
from sigma.supervision.supervisor import (
    Backoff,
    ChildHung,
    ChildSpec,
    Liveness,
    RestartScheduled,
    Strategy,
    Supervisor,
    SupervisorPolicy,
)


def events(count: int) -> tuple[Event, ...]:
    return tuple(make_event("notification", {"n": n}) for n in range(count))


async def test_producers_wait_on_a_full_intake_without_being_taken_for_hung(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The poller and heartbeat block on the gate for far longer than their watchdogs, while
    joins and leaves still find room; once the hub reads, every heartbeat arrives, none lost."""
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](4)
    intake = HubIntake(hub_send)  # events may fill 2 of the 4 slots
    unreachable = httpx.MockTransport(lambda request: httpx.Response(503))
    poller_config = PollerConfig(intervals_s={"system.status": 1.0})
    poller = functools.partial(
        run_poller, transport=unreachable, rng=random.Random(1), health=HealthBoard()
    )
    hub_gate = trio.Event()
    received: list[HubMessage] = []

    async def slow_hub(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        liveness.idle()
        await hub_gate.wait()
        async for message in hub_receive:
            received.append(message)

    observer = Observer()
    no_jitter = Backoff(min_s=0.1, max_s=5.0, factor=0.0, reset_after_s=30.0)
    policy = SupervisorPolicy(
        Strategy.ONE_FOR_ONE, max_restarts=100, max_seconds=10.0, backoff=no_jitter
    )
    specs = [
        ChildSpec("hub", slow_hub, watchdog_s=watchdog_s(0.0)),
        ChildSpec(
            "poller",
            poller,
            (poller_config, Endpoints(engine_url="http://engine.test/rpc"), intake),
            watchdog_s=watchdog_s(poller_period_s(poller_config)),
        ),
        ChildSpec(
            "heartbeat",
            run_heartbeat,
            (HeartbeatConfig(interval_s=1.0), intake),
            watchdog_s=watchdog_s(1.0),
        ),
    ]
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor("root", specs, policy, events=observer.send).run)
            await trio.sleep(120.0)
            assert hub_send.statistics().current_buffer_used == intake.room == 2
            assert intake.waits >= 2
            hub_send.send_nowait(Leave("someone"))  # sessions still get in
            hub_gate.set()
            await trio.sleep(120.0)
            nursery.cancel_scope.cancel()
    assert observer.of(ChildHung) == []
    assert observer.of(RestartScheduled) == []
    beats = [m.data["beat"] for m in received if isinstance(m, PublishHeartbeat)]
    assert len(beats) > 100 and beats == list(range(1, len(beats) + 1))


async def test_a_publish_is_refused_after_its_wait_when_the_inbox_has_no_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub_send, _hub_receive = trio.open_memory_channel[HubMessage](2)
    intake = HubIntake(hub_send)
    hub_send.send_nowait(Leave("filler"))  # nobody reads: the one slot for events is taken
    started = trio.current_time()
    with pytest.raises(Overloaded) as refused:
        await intake.publish(events(1), wait_s=0.5, reply_timeout_s=5.0)
    assert refused.value.reason == "inbox_full"
    assert trio.current_time() - started == pytest.approx(0.5, abs=0.01)
    assert intake.refused == {"herd_lagging": 0, "inbox_full": 1}
    assert hub_send.statistics().current_buffer_used == 1  # nothing of it was queued


async def test_a_publish_that_waited_goes_in_once_there_is_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](2)
    intake = HubIntake(hub_send)
    hub_send.send_nowait(Leave("filler"))
    async with trio.open_nursery() as nursery:

        async def hub_later() -> None:
            await trio.sleep(0.3)
            await run_hub(hub_receive, HubConfig(), heartbeat_interval_s=1.0, intake=intake)

        nursery.start_soon(hub_later)
        seqs = await intake.publish(events(3), wait_s=1.0, reply_timeout_s=5.0)
        assert seqs == (1, 2, 3)
        assert trio.current_time() >= 0.3
        nursery.cancel_scope.cancel()


async def test_an_idle_hub_handles_a_publish_on_the_publishers_task() -> None:
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](8)
    intake = HubIntake(hub_send)
    faults = Faults()
    async with trio.open_nursery() as nursery:
        actor: HubActor = await nursery.start(
            functools.partial(run_hub, heartbeat_interval_s=1.0, intake=intake, faults=faults),
            hub_receive,
            HubConfig(),
        )
        await trio.testing.wait_all_tasks_blocked()
        before = hub_receive.statistics()
        assert await intake.publish(events(2), wait_s=1.0, reply_timeout_s=5.0) == (1, 2)
        assert hub_receive.statistics() == before  # no message went through the inbox
        # With the hub's fault point armed, every publish passes through its loop instead.
        with faults.armed(FaultSpec(point="hub.publish", action="delay", delay_s=0.01)):
            assert await intake.publish(events(1), wait_s=1.0, reply_timeout_s=5.0) == (3,)
        assert actor.state.last_seq == 3
        nursery.cancel_scope.cancel()


async def test_a_bug_met_on_the_publishers_task_crashes_the_hub_not_only_the_request() -> None:
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](8)
    intake = HubIntake(hub_send)
    crashed: list[BaseException] = []

    async def hub(task_status: trio.TaskStatus[HubActor]) -> None:
        try:
            await run_hub(
                hub_receive,
                HubConfig(),
                heartbeat_interval_s=1.0,
                intake=intake,
                task_status=task_status,
            )
        except ZeroDivisionError as exc:
            crashed.append(exc)

    async with trio.open_nursery() as nursery:
        actor: HubActor = await nursery.start(hub)
        await trio.testing.wait_all_tasks_blocked()

        def broken(*args: object, **kwargs: object) -> None:
            raise ZeroDivisionError("a bug")

        actor.state.broadcast = broken  # type: ignore[method-assign]
        with pytest.raises(ZeroDivisionError):
            await intake.publish(events(1), wait_s=1.0, reply_timeout_s=5.0)
        await eventually(lambda: bool(crashed))
    assert str(crashed[0]) == "a bug"
