"""State on join: the hub's snapshot cache, replayed after the welcome and on subscribe."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import decode_frames

from sigma.hub.messages import Client
from sigma.hub.outbox import Outbox
from sigma.hub.snapshots import SnapshotCache
from sigma.hub.state import HubState
from sigma.protocol.client_frames import Subscribe, Unsubscribe
from sigma.protocol.event_types import CORE_EVENT_TYPES, KNOWN_EVENT_TYPES
from sigma.protocol.server_messages import Event, make_event


def new_state(history_size: int = 64) -> HubState:
    return HubState(history_size=history_size, max_subscriptions=16, heartbeat_interval_s=15.0)


def join(
    state: HubState,
    name: str,
    *,
    since: int | None = None,
    epoch: str | None = None,
    allowed: frozenset[str] = KNOWN_EVENT_TYPES,
) -> Outbox:
    outbox = Outbox(256)
    subscriptions = allowed & CORE_EVENT_TYPES  # what a session asks for without ?types=
    state.join(
        Client(name, outbox, allowed=allowed, subscriptions=subscriptions), since=since, epoch=epoch
    )
    return outbox


def drain(outbox: Outbox) -> list[dict[str, Any]]:
    return decode_frames(outbox.take_batch())


def publish_world(state: HubState) -> None:
    """Two system samples, two agents (one later removed), three jobs (one finished)."""
    for event_type, data in [
        ("system_status", {"cpu_usage": 10.0}),
        ("agent_status", {"agent_id": "w1", "state": "idle", "change": "added"}),
        ("agent_status", {"agent_id": "w2", "state": "idle", "change": "added"}),
        ("compression_update", {"job_id": "j1", "state": "running", "progress": 10}),
        ("compression_update", {"job_id": "j2", "state": "running", "progress": 50}),
        ("notification", {"message": "not a snapshot"}),
        ("system_status", {"cpu_usage": 20.0}),
        ("agent_status", {"agent_id": "w1", "state": "busy", "change": "updated"}),
        ("agent_status", {"agent_id": "w2", "change": "removed"}),
        ("compression_update", {"job_id": "j2", "state": "done", "progress": 100}),
        ("compression_update", {"job_id": "j3", "state": "queued", "progress": 0}),
        ("storage_update", {"data_dir": {"percent": 40.0}}),
    ]:
        state.broadcast(make_event(event_type, data))


def test_a_new_client_gets_the_newest_state_of_each_key_after_its_welcome() -> None:
    state = new_state()
    publish_world(state)
    welcome, *snapshots = drain(join(state, "a"))
    assert welcome["data"]["kind"] == "welcome" and welcome["data"]["last_seq"] == 12
    described = [
        (m["type"], m["data"].get("agent_id") or m["data"].get("job_id")) for m in snapshots
    ]
    assert described == [
        ("compression_update", "j1"),
        ("system_status", None),
        ("agent_status", "w1"),
        ("compression_update", "j3"),
        ("storage_update", None),
    ]
    assert [m["seq"] for m in snapshots] == [4, 7, 8, 11, 12]  # oldest first, each <= last_seq
    assert all(m["snapshot"] is True for m in snapshots)
    assert snapshots[1]["data"]["cpu_usage"] == 20.0


def test_live_events_carry_no_snapshot_marker_and_decode_as_not_snapshots() -> None:
    state = new_state()
    outbox = join(state, "a")
    state.broadcast(make_event("system_status", {"cpu_usage": 1.0}))
    _, live = drain(outbox)
    assert "snapshot" not in live
    assert Event.model_validate(live).snapshot is False
    assert Event.model_validate({**live, "snapshot": True}).snapshot is True


def test_snapshots_follow_the_subscriptions_and_exclude_supervision_by_default() -> None:
    state = new_state()
    state.broadcast(make_event("supervision", {"kind": "child_started", "tree": {}}))
    state.broadcast(make_event("system_status", {"cpu_usage": 5.0}))
    welcome, *snapshots = drain(join(state, "a"))
    assert welcome["data"]["subscriptions"] == sorted(CORE_EVENT_TYPES)
    assert [m["type"] for m in snapshots] == ["system_status"]

    limited = join(state, "b", allowed=frozenset({"heartbeat", "agent_status"}))
    assert drain(limited)[1:] == []


def test_subscribing_to_a_type_sends_its_snapshots_after_the_reply_and_nothing_twice() -> None:
    state = new_state()
    outbox = join(state, "a")
    state.command("a", Unsubscribe(action="unsubscribe", types=["system_status"]))
    state.broadcast(make_event("system_status", {"cpu_usage": 5.0}))
    state.broadcast(make_event("supervision", {"kind": "child_started", "tree": {}}))
    drain(outbox)
    state.command("a", Subscribe(action="subscribe", types=["supervision", "system_status"], id=3))
    reply, *snapshots = drain(outbox)
    assert reply["type"] == "subscriptions" and reply["data"]["request_id"] == 3
    assert [(m["type"], m["seq"], m["snapshot"]) for m in snapshots] == [
        ("system_status", 1, True),
        ("supervision", 2, True),
    ]
    state.command("a", Subscribe(action="subscribe", types=["system_status"], id=4))
    assert [m["type"] for m in drain(outbox)] == ["subscriptions"]  # had it already


def test_a_forbidden_subscribe_gets_an_error_and_no_snapshot() -> None:
    state = new_state()
    state.broadcast(make_event("supervision", {"kind": "child_started", "tree": {}}))
    outbox = join(state, "a", allowed=CORE_EVENT_TYPES)
    drain(outbox)
    state.command("a", Subscribe(action="subscribe", types=["supervision"], id=1))
    (error,) = drain(outbox)
    assert error["type"] == "error" and error["data"]["code"] == "forbidden"
    state.broadcast(make_event("supervision", {"kind": "child_exited", "tree": {}}))
    assert drain(outbox) == []


def test_a_recovered_resume_gets_its_backlog_and_no_snapshot() -> None:
    state = new_state()
    publish_world(state)
    welcome, *backlog = drain(join(state, "a", since=10, epoch=state.epoch))
    assert welcome["data"]["recovered"] is True
    assert [(m["seq"], "snapshot" in m) for m in backlog] == [(11, False), (12, False)]


@pytest.mark.parametrize("since", [None, 99])
def test_a_fresh_join_or_a_failed_resume_gets_the_snapshots(since: int | None) -> None:
    state = new_state()
    publish_world(state)
    welcome, *snapshots = drain(join(state, "a", since=since))
    assert welcome["data"].get("recovered") is (None if since is None else False)
    assert len(snapshots) == 5 and all(m["snapshot"] for m in snapshots)


def test_the_cache_is_bounded_and_forgets_the_oldest_updated_key() -> None:
    cache = SnapshotCache(max_keys=3)
    for seq, agent in enumerate(["a", "b", "c", "a", "d"], start=1):
        cache.note(make_event("agent_status", {"agent_id": agent}), seq)
    frames = decode_frames(cache.frames(["agent_status"]))
    assert [(m["data"]["agent_id"], m["seq"]) for m in frames] == [("c", 3), ("a", 4), ("d", 5)]


def test_events_without_an_entity_are_not_cached() -> None:
    cache = SnapshotCache()
    cache.note(make_event("agent_status", {"state": "idle"}), 1)
    cache.note(make_event("rpc_error", {}), 2)
    cache.note(make_event("notification", {}), 3)
    assert len(cache) == 0
    cache.note(make_event("heartbeat", {"beat": 1}), 4)
    assert len(cache) == 0
