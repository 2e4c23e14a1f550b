"""Fault points: actions, triggers, and what a disarmed point costs."""

from __future__ import annotations

import pytest
import trio
from pydantic import ValidationError

from sigma.faults import FAULT_POINTS, Faults, FaultSpec, InjectedFault


async def test_disarmed_point_does_nothing() -> None:
    point = Faults().point("hub.publish")
    assert not point.armed
    assert await point.hit() is False
    assert point.hits == 0


async def test_raise_every_third_hit() -> None:
    faults = Faults()
    with faults.armed(FaultSpec(point="poller.call", action="raise", every=3)) as point:
        outcomes = []
        for _ in range(7):
            try:
                outcomes.append(await point.hit())
            except InjectedFault:
                outcomes.append("boom")
    assert outcomes == [False, False, "boom", False, False, "boom", False]
    assert not point.armed and point.fired == 2


async def test_once_disarms_after_firing() -> None:
    faults = Faults((FaultSpec(point="sender.write", action="drop", once=True),))
    point = faults.point("sender.write")
    assert [await point.hit() for _ in range(3)] == [True, False, False]
    assert not point.armed


async def test_probability_is_reproducible_under_a_seed() -> None:
    def run() -> list[bool]:
        faults = Faults(
            (FaultSpec(point="heartbeat.tick", action="drop", probability=0.3, seed=7),)
        )
        point = faults.point("heartbeat.tick")
        return [point.hit_now() for _ in range(200)]  # a `drop` that fires says True

    first, second = run(), run()
    assert first == second
    assert 30 < sum(first) < 90


async def test_delay_waits_then_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    point = Faults((FaultSpec(point="engine.method", action="delay", delay_s=2.5),)).point(
        "engine.method"
    )
    start = trio.current_time()
    assert await point.hit() is False
    assert trio.current_time() - start == 2.5


async def test_hang_never_returns(autojump_clock: trio.testing.MockClock) -> None:
    point = Faults((FaultSpec(point="hub.publish", action="hang"),)).point("hub.publish")
    with trio.move_on_after(3600) as waited:
        await point.hit()
    assert waited.cancelled_caught


def test_clear_and_snapshot() -> None:
    faults = Faults((FaultSpec(point="hub.publish", action="raise", every=2),))
    rows = {row["point"]: row for row in faults.snapshot()}
    assert set(rows) == set(FAULT_POINTS)
    assert rows["hub.publish"]["description"] == "raise every 2 hit(s)"
    faults.clear()
    assert not any(row["armed"] for row in faults.snapshot())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"point": "nowhere", "action": "raise"}, "unknown fault point 'nowhere'"),
        ({"point": "hub.publish", "action": "explode"}, "action"),
        ({"point": "hub.publish", "action": "raise", "every": 0}, "every"),
        (
            {"point": "hub.publish", "action": "raise", "once": True, "every": 2},
            "choose one trigger",
        ),
        ({"point": "hub.publish", "action": "raise", "probability": 1.5}, "probability"),
        ({"point": "hub.publish", "action": "raise", "seed": 3}, "seed goes with probability"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FaultSpec.model_validate(fields)
