"""The overload rules (`sigma.hub.overload`) and how the hub's state applies them."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import decode_frames

from sigma.hub.messages import Client
from sigma.hub.outbox import Outbox, SlowClientPolicy
from sigma.hub.overload import (
    PACING_GRACES,
    PACING_SHARE,
    RECHECK_S,
    HerdWatch,
    Probation,
    count_deep,
    herd_lags,
    herd_recovered,
    is_deep,
    lags_far_behind,
    outlier_limit,
)
from sigma.hub.state import Broadcast, HubState
from sigma.protocol.server_messages import make_event


def decoded(outbox: Outbox) -> list[dict[str, Any]]:
    """Everything queued for `outbox`, taken and written as its sender would, decoded."""
    messages = decode_frames(outbox.take_batch())
    outbox.take_batch()  # the sender comes back for more: the batch it took is written
    return messages


def publish_one(state: HubState, n: int, now: float = 0.0) -> Broadcast:
    """One inbox message with one event, as the actor handles it: broadcast, then flush."""
    outcome = state.broadcast(make_event("notification", {"n": n}), now=now)
    state.flush()
    return outcome


def state_with(
    names: list[str], capacity: int, policy: SlowClientPolicy = "disconnect"
) -> tuple[HubState, dict[str, Outbox]]:
    """A hub state with one client per name, each queue of `capacity`, welcomes read."""
    state = HubState(history_size=16, max_subscriptions=8, heartbeat_interval_s=15.0)
    outboxes = {name: Outbox(capacity, policy) for name in names}
    for name, outbox in outboxes.items():
        state.join(Client(name, outbox), since=None, epoch=None)
        decoded(outbox)
    return state, outboxes


def test_deep_means_at_least_half_full() -> None:
    assert not is_deep(3, 8) and is_deep(4, 8) and is_deep(8, 8)


def test_the_few_that_may_lag_alone_are_a_tenth_of_the_clients_and_at_least_one() -> None:
    assert [outlier_limit(n) for n in (0, 1, 2, 10, 19, 20, 100, 1000)] == [
        1,
        1,
        1,
        1,
        1,
        2,
        10,
        100,
    ]


@pytest.mark.parametrize(
    ("deep", "clients", "lags"),
    [(0, 0, False), (1, 1, False), (2, 2, True), (1, 2, False), (10, 100, False), (11, 100, True)],
)
def test_the_herd_lags_when_more_than_the_few_are_deep(deep: int, clients: int, lags: bool) -> None:
    assert herd_lags(deep, clients) is lags


def test_a_full_client_lags_far_behind_when_the_median_of_the_others_is_below_a_quarter() -> None:
    assert lags_far_behind(1.0, [0.0])  # of two, the one that stopped
    assert lags_far_behind(1.5, [0.0] * 50 + [1.0] * 49)  # up to half the others may lag too
    assert not lags_far_behind(1.5, [0.0] * 49 + [1.0] * 50)  # the herd lags: its median is full
    assert not lags_far_behind(1.0, [0.25, 0.3, 0.0])  # the others' median is a quarter full
    assert not lags_far_behind(0.99, [0.0, 0.0])  # not at its bound
    assert not lags_far_behind(5.0, [])  # alone: the herd is that client


def test_probation_releases_who_drained_and_cuts_who_lags_far_behind_after_the_grace() -> None:
    probation = Probation(grace_s=1.0)
    assert not probation and not probation.due_review(0.0)
    probation.start("stalled", now=10.0)
    probation.start("brief", now=10.2)
    probation.start("stalled", now=10.5)  # already on probation: its start stands
    assert probation and probation.started == 2
    fills = {"stalled": 1.2, "brief": 1.0, "a": 0.0, "b": 0.1}
    assert probation.review(fills, now=10.999) == []  # nobody before the grace
    assert not probation.due("stalled", 10.999) and probation.due("stalled", 11.0)
    assert probation.review({**fills, "brief": 0.2}, now=11.0) == [("stalled", "lags_far_behind")]
    assert not probation  # brief drained to below a quarter: released
    probation.start("herd", now=20.0)
    assert probation.review({"herd": 1.0, "a": 0.9, "b": 0.5}, now=25.0) == []  # herd lags
    assert probation.since == {"herd": 20.0}
    assert probation.review({"a": 0.0}, now=25.1) == [] and not probation  # it left


LEVEL = {"a": 0.0, "b": 0.1}
"""The fills of two clients that keep up."""


def hold_the_gate(
    probation: Probation,
    client_id: str,
    start: float,
    held_s: float,
    others: dict[str, float] = LEVEL,
) -> None:
    """`client_id` is full at `start`, is still draining `held_s` later, and then has drained
    (the `others` at their fills meanwhile)."""
    probation.start(client_id, now=start)
    assert probation.review({client_id: 0.9, **others}, now=start + held_s) == []
    assert probation.review({client_id: 0.2, **others}, now=start + held_s) == []
    assert client_id not in probation.since


def test_the_pacing_window_is_ten_graces_and_more_than_half_of_it_paces_the_publishers() -> None:
    assert Probation(grace_s=2.0).pacing_window_s == PACING_GRACES * 2.0 == 20.0
    assert PACING_SHARE == 0.5


def test_a_client_on_probation_most_of_the_time_while_the_rest_are_level_is_cut() -> None:
    probation = Probation(grace_s=1.0)
    for second in range(6):  # full again each second, drained 0.8 s later: never past the grace
        hold_the_gate(probation, "pacer", start=second, held_s=0.8)
    assert probation.held_s("pacer", now=6.0) == pytest.approx(4.8)
    probation.start("pacer", now=6.0)
    assert probation.review({"pacer": 0.9, **LEVEL}, now=6.15) == []  # 4.95 s of 10
    assert probation.review({"pacer": 0.9, **LEVEL}, now=6.25) == [("pacer", "paces_publishers")]
    assert not probation and "pacer" not in probation.earlier  # cut: forgotten


def test_a_herd_that_holds_the_gate_most_of_the_time_is_not_cut_for_pacing() -> None:
    probation = Probation(grace_s=1.0)
    behind = {"a": 0.3, "b": 0.5}  # the others' median is past a quarter: the herd lags
    for second in range(8):
        hold_the_gate(probation, "pacer", start=second, held_s=0.8, others=behind)
    probation.start("pacer", now=8.0)
    assert probation.paces("pacer", now=8.5)
    assert probation.review({"pacer": 0.9, **behind}, now=8.5) == []
    assert probation.since == {"pacer": 8.0}


def test_a_client_only_a_little_slower_than_the_publishers_is_never_cut() -> None:
    probation = Probation(grace_s=1.0)
    for second in range(30):  # on probation 0.45 s of every second: 4.5 s of any 10
        hold_the_gate(probation, "slower", start=second, held_s=0.45)
        assert not probation.paces("slower", now=second + 0.45)
    assert probation.held_s("slower", now=30.0) == pytest.approx(4.5)
    assert len(probation.earlier["slower"].spans) == 10  # older probations are let go


def test_probations_older_than_the_window_do_not_count() -> None:
    probation = Probation(grace_s=1.0)
    for second in range(5):  # 4.5 s: 0.9 s more within the window would make it pace
        hold_the_gate(probation, "once_slow", start=second, held_s=0.9)
    probation.start("once_slow", now=30.0)  # but that was 25 s before: out of the window
    assert probation.held_s("once_slow", now=30.9) == pytest.approx(0.9)
    assert probation.review({"once_slow": 0.9, **LEVEL}, now=30.9) == []


def test_a_client_that_left_is_forgotten_with_its_earlier_probations() -> None:
    probation = Probation(grace_s=1.0)
    hold_the_gate(probation, "gone", start=0.0, held_s=0.9)
    probation.start("gone", now=1.0)
    assert probation.review(LEVEL, now=1.1) == []  # no longer among the fills
    assert not probation and "gone" not in probation.earlier


def test_recovery_needs_the_few_below_a_quarter_so_the_gate_does_not_flap() -> None:
    watch = HerdWatch()
    assert watch.after_broadcast(3, 4, now=1.0) and watch.lagging and watch.episodes == 1
    assert not watch.after_broadcast(4, 4, now=1.1)  # already lagging: one episode
    assert not watch.due_recheck(1.0 + RECHECK_S / 2)
    assert watch.due_recheck(1.0 + 2 * RECHECK_S)
    assert not watch.recheck([0.3, 0.3, 0.0, 0.0], now=2.0)  # below half, not below a quarter
    assert watch.lagging and watch.checked_at == 2.0
    assert watch.recheck([0.2, 0.2, 1.0, 0.0], now=3.0)  # one may lag alone
    assert not watch.lagging
    assert herd_recovered([]) and not herd_recovered([0.25, 0.25])
    assert count_deep([0.5, 0.49, 2.0]) == 2


def test_one_stalled_client_among_readers_is_cut_after_the_grace_and_the_herd_does_not_lag() -> (
    None
):
    state, outboxes = state_with(["stalled", "a", "b", "c"], capacity=4)
    cut = 0
    for n in range(6):
        cut += publish_one(state, n, now=0.1 * n).cut_off
        for name in "abc":
            decoded(outboxes[name])  # these keep up
    assert cut == 0 and outboxes["stalled"].close_reason is None  # on probation, not cut
    assert list(state.probation.since) == ["stalled"]
    assert state.review_probation(now=1.39) == 0  # on probation since 0.4: not over
    assert state.review_probation(now=1.41) == 1
    assert state.slow_disconnects == 1 and "stalled" not in state.clients
    assert outboxes["stalled"].close_reason is not None
    assert outboxes["stalled"].close_reason.code == 4008
    assert not state.herd.lagging and not state.probation


def test_a_stalled_client_is_cut_by_the_first_broadcast_after_the_grace() -> None:
    state, outboxes = state_with(["stalled", "a"], capacity=4)
    for n in range(5):
        publish_one(state, n, now=0.0)
        decoded(outboxes["a"])
    assert publish_one(state, 5, now=0.99).cut_off == 0
    decoded(outboxes["a"])
    assert publish_one(state, 6, now=1.0).cut_off == 1
    assert outboxes["stalled"].close_reason is not None
    assert [m["seq"] for m in decoded(outboxes["a"])] == [7]


def test_when_the_herd_lags_nobody_is_cut_and_every_event_stays_queued_in_order() -> None:
    state, outboxes = state_with(["a", "b", "c"], capacity=4)
    outcomes = [publish_one(state, n, now=float(n)) for n in range(10)]  # whole seconds apart
    assert sum(o.cut_off for o in outcomes) == 0 and state.slow_disconnects == 0
    assert outcomes[2].deep == 3  # half full with two events unread: what the actor reports
    assert state.kept_beyond_capacity == 3 * 6
    assert state.review_probation(now=100.0) == 0 and len(state.probation.since) == 3
    for outbox in outboxes.values():
        assert outbox.close_reason is None
        assert [m["seq"] for m in decoded(outbox)] == list(range(1, 11))


def test_a_client_still_far_behind_once_the_herd_has_caught_up_is_cut_after_the_grace() -> None:
    state, outboxes = state_with(["a", "b", "c"], capacity=8)
    for n in range(10):
        publish_one(state, n, now=0.0)  # all lag: kept past the bound, all on probation
    decoded(outboxes["a"])
    decoded(outboxes["b"])  # two catch up; c is still 10 deep
    outcome = publish_one(state, 10, now=0.5)
    assert outcome.cut_off == 0 and outboxes["c"].close_reason is None  # within the grace
    outcome = publish_one(state, 11, now=1.0)
    assert outcome.cut_off == 1 and outboxes["c"].close_reason is not None
    assert outboxes["a"].close_reason is None and outboxes["b"].close_reason is None


def test_drop_oldest_keeps_dropping_rather_than_queueing_past_the_bound() -> None:
    state, outboxes = state_with(["a", "b"], capacity=4, policy="drop_oldest")
    for n in range(10):
        publish_one(state, n)
    assert all(len(outbox) == 4 and outbox.dropped == 6 for outbox in outboxes.values())
    assert state.kept_beyond_capacity == 0


def test_one_requests_batch_is_queued_whole_whatever_the_bound() -> None:
    state, outboxes = state_with(["a", "b"], capacity=4)
    outcome = state.broadcast(make_event("notification", {"n": 0}))
    for n in range(1, 10):  # one inbox message of ten events: no flush in between
        outcome = state.broadcast(make_event("notification", {"n": n}))
    state.flush()
    assert outcome.cut_off == 0 and state.slow_disconnects == 0
    assert all(len(outbox) == 10 for outbox in outboxes.values())


def test_a_closed_client_holds_no_gate_while_it_waits_to_leave_the_table() -> None:
    """Its `Leave` may be lost on a full inbox, and it stays in the table until its next
    delivery: its full queue must not count as a lagging client meanwhile."""
    state, outboxes = state_with(["gone", "reader"], capacity=4)
    for n in range(3):
        state.broadcast(make_event("notification", {"n": n}))
    state.flush()
    assert len(state.fills()) == 2
    outboxes["gone"].close(1001, "client gone")
    assert "gone" in state.clients
    assert state.fills() == state.fills(with_sockets=True)
    assert len(state.fills()) == 1
    assert list(state.fills_by_id()) == ["reader"]
