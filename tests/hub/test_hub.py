"""The hub's decisions: numbering, fan-out by subscription, resume and slow clients."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
import trio
import trio.testing
from helpers import decode_frames
from hypothesis import given
from hypothesis import strategies as st

from sigma.config import HubConfig
from sigma.hub.actor import HubActor
from sigma.hub.loop import MESSAGES_PER_TURN, run_hub
from sigma.hub.messages import Client, Join, Publish, PublishHeartbeat
from sigma.hub.outbox import Outbox
from sigma.hub.state import HubState
from sigma.protocol.client_frames import Subscribe, Unsubscribe
from sigma.protocol.event_types import CORE_EVENT_TYPES, EVENT_TYPES
from sigma.protocol.server_messages import make_event


def drain(outbox: Outbox) -> list[dict[str, Any]]:
    """Everything queued in `outbox`, as the JSON messages a client would read."""
    return decode_frames(outbox.take_batch())


def new_state(history_size: int = 16) -> HubState:
    return HubState(history_size=history_size, max_subscriptions=8, heartbeat_interval_s=15.0)


def join(
    state: HubState,
    name: str,
    *,
    capacity: int = 64,
    since: int | None = None,
    epoch: str | None = None,
    allowed: frozenset[str] = CORE_EVENT_TYPES,
) -> Outbox:
    outbox = Outbox(capacity)
    state.join(
        Client(name, outbox, allowed=allowed, subscriptions=allowed), since=since, epoch=epoch
    )
    return outbox


def test_seq_increases_by_one_across_types() -> None:
    state = new_state()
    outbox = join(state, "a")
    for event_type in ["system_status", "heartbeat", "rpc_error"]:
        state.broadcast(make_event(event_type, {}))
    welcome, *events = drain(outbox)
    assert welcome["data"]["kind"] == "welcome"
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["type"] for e in events] == ["system_status", "heartbeat", "rpc_error"]


def test_only_subscribers_receive_and_counts_are_reported() -> None:
    state = new_state()
    everything = join(state, "all")
    only_heartbeat = join(state, "hb")
    state.command(
        "hb", Unsubscribe(action="unsubscribe", types=[t for t in EVENT_TYPES if t != "heartbeat"])
    )
    outcome = state.broadcast(make_event("system_status", {}))
    assert (outcome.sent_to, outcome.skipped, outcome.cut_off) == (1, 1, 0)
    state.broadcast(make_event("heartbeat", {}))
    assert [m["type"] for m in drain(everything)][1:] == ["system_status", "heartbeat"]
    hb_messages = drain(only_heartbeat)
    assert [m["type"] for m in hb_messages] == ["notification", "subscriptions", "heartbeat"]
    assert hb_messages[1]["data"]["subscriptions"] == ["heartbeat"]


def test_subscribe_beyond_claims_is_forbidden_and_changes_nothing() -> None:
    state = new_state()
    outbox = join(state, "a", allowed=frozenset({"heartbeat"}))
    state.command("a", Subscribe(action="subscribe", types=["system_status"], id=9))
    welcome, error = drain(outbox)
    assert welcome["data"]["subscriptions"] == ["heartbeat"]
    assert error["type"] == "error" and error["data"]["code"] == "forbidden"
    assert error["data"]["request_id"] == 9
    state.broadcast(make_event("system_status", {}))
    assert drain(outbox) == []


def test_full_queue_cuts_the_client_off_without_touching_others() -> None:
    state = new_state()
    slow = join(state, "slow", capacity=2)
    fast = join(state, "fast", capacity=100)
    outcomes = []
    for n in range(5):  # one inbox message a second (past the grace), flushed like the actor
        outcomes.append(state.broadcast(make_event("heartbeat", {"n": n}), now=float(n)))
        state.flush()
    assert slow.close_reason is not None and slow.close_reason.code == 4008
    assert slow.close_reason.reason == "slow consumer"
    assert "slow" not in state.clients
    assert sum(o.cut_off for o in outcomes) == 1
    assert [m["seq"] for m in drain(fast)[1:]] == [1, 2, 3, 4, 5]


def test_resume_replays_matching_events_after_since() -> None:
    state = new_state()
    for n in range(6):
        state.broadcast(make_event("heartbeat" if n % 2 else "system_status", {"n": n}))
    outbox = Outbox(64)
    client = Client("r", outbox, subscriptions=frozenset({"heartbeat"}))
    result = state.join(client, since=2, epoch=state.epoch)
    welcome, *replayed = drain(outbox)
    assert result.recovered is True and welcome["data"]["recovered"] is True
    assert [m["seq"] for m in replayed] == [4, 6]
    state.broadcast(make_event("heartbeat", {}))
    assert [m["seq"] for m in drain(outbox)] == [7]


@pytest.mark.parametrize(
    ("since", "epoch", "recovered"),
    [
        (0, None, False),
        (1, None, False),
        (3, "other-epoch", False),
        (99, None, False),
        (10, None, True),
    ],
)
def test_resume_outside_history_or_epoch_is_not_recovered(
    since: int, epoch: str | None, recovered: bool
) -> None:
    state = new_state(history_size=8)
    for _ in range(10):
        state.broadcast(make_event("heartbeat", {}))
    outbox = join(state, "r", since=since, epoch=epoch)
    welcome, *replayed = drain(outbox)
    assert welcome["data"]["recovered"] is recovered
    assert replayed == []


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=30))
def test_resume_never_gaps_or_duplicates(published_before: int, since: int) -> None:
    state = new_state(history_size=12)
    for _ in range(published_before):
        state.broadcast(make_event("heartbeat", {}))
    outbox = join(state, "r", since=since)
    state.broadcast(make_event("heartbeat", {}))
    welcome, *seen = drain(outbox)
    seqs = [m["seq"] for m in seen]
    if welcome["data"]["recovered"]:
        assert seqs == list(range(since + 1, published_before + 2))
    else:
        assert seqs == [published_before + 1]


async def test_hub_actor_answers_publish_with_seqs_and_enriches_heartbeats() -> None:
    send, receive = trio.open_memory_channel[Any](16)
    reply_send, reply_receive = trio.open_memory_channel[tuple[int, ...]](1)
    async with trio.open_nursery() as nursery:
        actor: HubActor = await nursery.start(
            lambda **kw: run_hub(receive, HubConfig(), heartbeat_interval_s=15.0, **kw)
        )
        outbox = Outbox(16)
        await send.send(Join(Client("c", outbox)))
        events = (make_event("notification", {"a": 1}), make_event("rpc_error", {"b": 2}))
        await send.send(Publish(events, reply_send))
        assert await reply_receive.receive() == (1, 2)
        await send.send(PublishHeartbeat({"beat": 1}))
        await send.aclose()
    messages = drain(outbox)
    assert outbox.close_reason is not None and outbox.close_reason.code == 1012
    assert actor.state.clients == {}
    assert messages == []  # closing the outbox on hub exit discards what was queued


async def test_a_burst_longer_than_one_turn_is_handled_whole_and_in_order() -> None:
    """Messages that wait are handled several to a turn (`MESSAGES_PER_TURN`): none is skipped
    or reordered at a turn's end, and the inbox ending inside a turn ends the hub."""
    count = 3 * MESSAGES_PER_TURN + 7
    send, receive = trio.open_memory_channel[Any](count + 1)
    outbox = Outbox(count + 1)
    send.send_nowait(Join(Client("c", outbox)))
    for n in range(count):
        send.send_nowait(Publish((make_event("notification", {"n": n}),)))
    send.close()
    state = new_state(history_size=count)
    with trio.fail_after(5):
        await run_hub(receive, HubConfig(), heartbeat_interval_s=15.0, state=state)
    assert outbox.close_reason is not None and outbox.close_reason.code == 1012
    replayed = drain(join(state, "late", capacity=count + 1, since=0, epoch=state.epoch))[1:]
    assert [(m["seq"], m["data"]["n"]) for m in replayed] == [(n + 1, n) for n in range(count)]


@pytest.mark.parametrize("budget_s, most_per_turn", [(60.0, MESSAGES_PER_TURN), (0.0, 1)])
async def test_a_long_burst_lets_other_tasks_run_between_the_hubs_turns(
    budget_s: float, most_per_turn: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn ends after `MESSAGES_PER_TURN` messages, or once it has lasted `TURN_BUDGET_S`
    (here 0: after the first message), so that a burst never keeps the rest of the server
    waiting for long."""
    monkeypatch.setattr("sigma.hub.loop.TURN_BUDGET_S", budget_s)
    count = 3 * MESSAGES_PER_TURN
    send, receive = trio.open_memory_channel[Any](count)
    for n in range(count):
        send.send_nowait(Publish((make_event("notification", {"n": n}),)))
    state = new_state()
    seen = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(run_hub, heartbeat_interval_s=15.0, state=state), receive, HubConfig()
        )
        while seen[-1] < count:
            await trio.lowlevel.checkpoint()
            if state.last_seq != seen[-1]:
                seen.append(state.last_seq)
        nursery.cancel_scope.cancel()
    # The other task runs once in each of trio's batches, the hub at most one turn in each:
    # between two of its looks, at most two turns have passed.
    steps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert max(steps) <= 2 * most_per_turn < count


async def test_a_client_that_left_while_its_join_waited_is_not_welcomed() -> None:
    """Its outbox is closed already: welcoming it would raise and take the hub down."""
    hub_send, hub_receive = trio.open_memory_channel[Any](8)
    gone, stays = Outbox(8), Outbox(8)
    gone.close(1006, "")
    async with trio.open_nursery() as nursery:
        hub: HubActor = await nursery.start(
            functools.partial(run_hub, heartbeat_interval_s=1.0), hub_receive, HubConfig()
        )
        await hub_send.send(Join(Client("gone", gone)))
        await hub_send.send(Join(Client("stays", stays)))
        await trio.testing.wait_all_tasks_blocked()
        assert list(hub.state.clients) == ["stays"]
        nursery.cancel_scope.cancel()


def test_idempotency_keys_outlive_a_hub_restart() -> None:
    """A publisher retrying after a hub crash (when retries happen) must not publish twice:
    the keys live with the numbering that the tree hands every incarnation."""
    config = HubConfig()
    first = HubActor(config, heartbeat_interval_s=1.0)
    events = (make_event("notification", {"n": 1}), make_event("notification", {"n": 2}))
    assert first.publish_now(events, "retry-me") == (1, 2)
    restarted = HubActor(config, heartbeat_interval_s=1.0, state=first.state)
    outbox = Outbox(8)
    restarted.handle(Join(Client("c", outbox)))
    outbox.take_batch()  # the welcome
    assert restarted.publish_now(events, "retry-me") == (1, 2)
    assert restarted.state.last_seq == 2
    assert outbox.take_batch() == []
    assert restarted.publish_now(events, "another") == (3, 4)


def test_the_welcome_carries_the_newest_heartbeats_timestamp() -> None:
    """So a page can show the heartbeat's age at once, not after the next beat (15 s)."""
    hub = HubActor(HubConfig(), heartbeat_interval_s=15.0)
    early = Outbox(8)
    hub.handle(Join(Client("early", early)))
    assert "last_heartbeat_at" not in decode_frames(early.take_batch())[0]["data"]
    hub.handle(PublishHeartbeat({"beat": 0}))
    beat = decode_frames(early.take_batch())[0]
    late = Outbox(8)
    hub.handle(Join(Client("late", late)))
    welcome = decode_frames(late.take_batch())[0]
    assert welcome["data"]["last_heartbeat_at"] == beat["timestamp"]


def test_the_welcome_counts_the_clients_with_the_one_it_welcomes() -> None:
    """So a page shows how many are connected at once, not the tree's count from its last
    supervision event (sessions that come and go send none) or the last heartbeat's."""
    hub = HubActor(HubConfig(), heartbeat_interval_s=15.0)
    first, second, third = Outbox(8), Outbox(8), Outbox(8)
    hub.handle(Join(Client("first", first)))
    hub.handle(Join(Client("second", second)))
    assert decode_frames(first.take_batch())[0]["data"]["client_count"] == 1
    assert decode_frames(second.take_batch())[0]["data"]["client_count"] == 2
    hub.state.remove("first")
    hub.handle(Join(Client("third", third)))
    assert decode_frames(third.take_batch())[0]["data"]["client_count"] == 2
