"""Probation: a client whose queue is full closes the hub's gate for a grace, and is cut off
only if it still lags far behind the rest afterwards (run on trio's clock, with real outboxes).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from helpers import decode_frames
from pydantic import ValidationError

from sigma.config import HubConfig
from sigma.hub.actor import HubActor
from sigma.hub.intake import HubIntake, Overloaded
from sigma.hub.loop import run_hub
from sigma.hub.messages import Client, HubMessage, Join
from sigma.hub.outbox import Outbox
from sigma.protocol.server_messages import make_event

GRACE_S = 1.0
QUEUE = 4


def take_all(outbox: Outbox) -> list[dict[str, Any]]:
    """What a sender would write for `outbox` now, decoded (and its batch written)."""
    messages = decode_frames(outbox.take_batch())
    outbox.take_batch()
    return messages


def setting(event: trio.Event) -> Callable[[object], None]:
    """An `on_close` callback that sets `event`."""
    return lambda _reason: event.set()


@asynccontextmanager
async def hub_with(
    names: list[str], closed: dict[str, trio.Event] | None = None
) -> AsyncIterator[tuple[HubIntake, HubActor, dict[str, Outbox]]]:
    """A running hub behind its intake, with one client per name, welcomes taken; `closed`
    gets an event per name, set when that client's outbox is closed."""
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](64)
    intake = HubIntake(hub_send)
    config = HubConfig(queue_size=QUEUE, slow_client_grace_s=GRACE_S)
    outboxes = {name: Outbox(QUEUE) for name in names}
    if closed is not None:
        closed.update((name, trio.Event()) for name in names)
        outboxes = {name: Outbox(QUEUE, on_close=setting(closed[name])) for name in names}
    async with trio.open_nursery() as nursery:
        actor: HubActor = await nursery.start(
            functools.partial(run_hub, heartbeat_interval_s=1.0, intake=intake),
            hub_receive,
            config,
        )
        for name, outbox in outboxes.items():
            await hub_send.send(Join(Client(name, outbox)))
        await trio.testing.wait_all_tasks_blocked()
        for outbox in outboxes.values():
            assert take_all(outbox)[0]["data"]["kind"] == "welcome"
        yield intake, actor, outboxes
        nursery.cancel_scope.cancel()


async def read_every(
    outboxes: list[Outbox], seqs: dict[int, list[int]], period_s: float = 0.001
) -> None:
    """Clients that keep up: take what is queued for each, every `period_s`."""
    while True:
        for outbox in outboxes:
            seqs.setdefault(id(outbox), []).extend(m["seq"] for m in take_all(outbox))
        await trio.sleep(period_s)


async def publish_one(intake: HubIntake, n: int, wait_s: float = 5.0) -> int:
    (seq,) = await intake.publish(
        (make_event("notification", {"n": n}),), wait_s=wait_s, reply_timeout_s=5.0
    ) or (0,)
    return seq


async def test_a_stalled_client_is_cut_after_the_grace_and_no_sooner_with_the_gate_closed_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hub_with(["stalled", "a", "b", "c"]) as (intake, actor, outboxes):
        readers = [outboxes[name] for name in "abc"]
        seqs: dict[int, list[int]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_every, readers, seqs)
            for n in range(QUEUE + 1):  # the last goes past the stalled client's bound
                assert await publish_one(intake, n) == n + 1
            full_at = trio.current_time()
            assert intake.closed_because() == "herd_lagging"  # the gate is closed
            assert list(actor.state.probation.since) == ["stalled"] and actor.on_probation() == 1

            waited: list[float] = []

            async def publisher() -> None:
                assert await publish_one(intake, QUEUE + 1) == QUEUE + 2
                waited.append(trio.current_time() - full_at)

            nursery.start_soon(publisher)
            await trio.sleep(GRACE_S - 0.01)
            assert outboxes["stalled"].close_reason is None  # not before the grace
            assert not waited and intake.closed_because() == "herd_lagging"
            await trio.sleep(0.1)
            assert outboxes["stalled"].close_reason is not None
            assert outboxes["stalled"].close_reason.code == 4008
            assert actor.state.slow_disconnects == 1 and "stalled" not in actor.state.clients
            assert intake.closed_because() is None and actor.on_probation() == 0  # reopened
            assert waited and GRACE_S <= waited[0] <= GRACE_S + 0.1
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        for outbox in readers:  # nothing accepted was lost for the clients that kept up
            assert seqs[id(outbox)] == list(range(1, QUEUE + 3))


async def test_a_client_briefly_behind_drains_while_the_gate_is_closed_and_is_not_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hub_with(["brief", "a", "b"]) as (intake, actor, outboxes):
        seqs: dict[int, list[int]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_every, [outboxes["a"], outboxes["b"]], seqs)
            for n in range(QUEUE + 1):
                await publish_one(intake, n)
            assert intake.closed_because() == "herd_lagging"
            accepted: list[int] = []

            async def publisher() -> None:
                for n in range(QUEUE + 1, 3 * QUEUE):
                    accepted.append(await publish_one(intake, n))

            nursery.start_soon(publisher)
            await trio.sleep(GRACE_S / 2)
            assert not accepted  # producers wait while it is on probation
            brief = take_all(outboxes["brief"])  # it reads again, within the grace
            nursery.start_soon(read_every, [outboxes["brief"]], seqs)
            await trio.sleep(0.1)
            assert not actor.state.probation and intake.closed_because() is None
            assert actor.state.probation.started == 1
            await trio.sleep(GRACE_S * 3)
            nursery.cancel_scope.cancel()
        assert accepted == list(range(QUEUE + 2, 3 * QUEUE + 1))
        assert outboxes["brief"].close_reason is None and actor.state.slow_disconnects == 0
        everything = list(range(1, 3 * QUEUE + 1))
        assert [m["seq"] for m in brief] + seqs[id(outboxes["brief"])] == everything
        assert seqs[id(outboxes["a"])] == seqs[id(outboxes["b"])] == everything


async def test_a_herd_that_lags_holds_the_gate_closed_with_nobody_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hub_with(["a", "b", "c"]) as (intake, actor, outboxes):
        burst = tuple(make_event("notification", {"n": n}) for n in range(QUEUE + 1))
        await intake.publish(burst, wait_s=5.0, reply_timeout_s=5.0)  # nobody reads
        assert await publish_one(intake, QUEUE + 1) == QUEUE + 2  # finds them all full
        assert actor.state.herd.lagging and len(actor.state.probation.since) == 3
        with pytest.raises(Overloaded) as refused:
            await publish_one(intake, 99, wait_s=10 * GRACE_S)
        assert refused.value.reason == "herd_lagging"
        assert actor.state.slow_disconnects == 0
        assert all(outbox.close_reason is None for outbox in outboxes.values())
        for outbox in outboxes.values():  # they read again: all that was accepted, in order
            assert [m["seq"] for m in take_all(outbox)] == list(range(1, QUEUE + 3))
        await trio.sleep(0.1)
        assert intake.closed_because() is None
        assert await publish_one(intake, 100) == QUEUE + 3


async def test_a_client_that_reads_slower_than_what_is_published_is_cut_for_pacing_the_publishers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # It reads every 0.3 s: each time, it drains before the grace and the gate opens, only to
    # close on it again at once. Left alone, every publisher would go at its pace for ever.
    closed: dict[str, trio.Event] = {}
    async with hub_with(["steady", "a", "b"], closed) as (intake, actor, outboxes):
        seqs: dict[int, list[int]] = {}
        accepted: list[tuple[float, int]] = []

        async def publisher() -> None:
            for n in range(10_000):
                accepted.append((trio.current_time(), await publish_one(intake, n, wait_s=60.0)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_every, [outboxes["a"], outboxes["b"]], seqs)
            nursery.start_soon(read_every, [outboxes["steady"]], seqs, 0.3)
            started = trio.current_time()
            nursery.start_soon(publisher)
            with trio.fail_after(60):
                await closed["steady"].wait()
            cut_after = trio.current_time() - started
            paced = len(accepted)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        window_s = actor.state.probation.pacing_window_s
        assert 0.5 * window_s < cut_after < 0.6 * window_s  # it held the gate nearly throughout
        assert actor.state.cut_by_rule == {"lags_far_behind": 0, "paces_publishers": 1}
        assert outboxes["steady"].close_reason.code == 4008
        assert actor.state.probation.started > 10  # it drained, and filled again, many times
        assert paced < 25 * cut_after  # at its pace: its queue (4) and one more per 0.3 s
        assert len(accepted) - paced > 5 * paced / cut_after  # then as fast as the rest read
        everything = [seq for _, seq in accepted]
        assert everything == list(range(1, len(accepted) + 1))
        for name in "ab":  # the clients that kept up lost nothing
            assert seqs[id(outboxes[name])][: len(everything)] == everything
        steady = seqs[id(outboxes["steady"])]
        assert steady == everything[: len(steady)]  # in order, no gap, until it was cut


@pytest.mark.parametrize("grace", [0.0, -1.0, 61.0, "soon"])
def test_a_bad_grace_is_refused_naming_the_key(grace: object) -> None:
    with pytest.raises(ValidationError, match="slow_client_grace_s"):
        HubConfig.model_validate({"slow_client_grace_s": grace})
