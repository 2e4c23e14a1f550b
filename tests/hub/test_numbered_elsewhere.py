"""The hub of a cluster node: it hands publishes to the broker and broadcasts what comes back
numbered (`Deliver`); a numbering that does not follow on restarts its own. Also `Notice`
(unnumbered, never replayed) and idempotency keys in one process."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from helpers import decode_frames

from sigma.config import HubConfig
from sigma.hub.actor import CATCH_UP_S, HubActor
from sigma.hub.messages import Client, Deliver, Join, Leave, Notice, Publish, PublishHeartbeat
from sigma.hub.outbox import Outbox
from sigma.protocol.server_messages import Event, make_event


def drain(outbox: Outbox) -> list[dict[str, Any]]:
    return decode_frames(outbox.take_batch())


def node_hub(handed: list[Publish] | None = None) -> HubActor:
    forwarded = handed if handed is not None else []
    return HubActor(
        HubConfig(history_size=8),
        heartbeat_interval_s=1.0,
        numbering=forwarded.append,
        node_id="node-a",
    )


def joined(hub: HubActor, name: str, **resume: Any) -> Outbox:
    outbox = Outbox(64)
    hub.handle(Join(Client(name, outbox), **resume))
    return outbox


def numbered(*seqs: int) -> tuple[tuple[int, Event], ...]:
    return tuple((seq, make_event("notification", {"n": seq})) for seq in seqs)


def test_a_node_hands_publishes_and_heartbeats_over_and_numbers_nothing_itself() -> None:
    handed: list[Publish] = []
    hub = node_hub(handed)
    outbox = joined(hub, "c")
    drain(outbox)
    publish = Publish((make_event("notification", {"a": 1}),))
    hub.handle(publish)
    hub.handle(PublishHeartbeat({"beat": 1}))
    assert handed[0] is publish
    (heartbeat,) = handed[1].events
    assert heartbeat.type == "heartbeat"
    assert heartbeat.data["node"] == "node-a" and heartbeat.data["client_count"] == 1
    assert drain(outbox) == [] and hub.state.last_seq == 0


def test_delivered_events_keep_the_seqs_they_were_given_and_are_kept_for_resume() -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1, 2)))
    outbox = joined(hub, "c")
    drain(outbox)
    hub.handle(Deliver("e1", 2, numbered(3, 4)))
    assert [m["seq"] for m in drain(outbox)] == [3, 4]
    resumed = joined(hub, "r", since=1, epoch="e1")
    welcome, *replayed = drain(resumed)
    assert welcome["data"]["recovered"] is True and welcome["data"]["node"] == "node-a"
    assert [m["seq"] for m in replayed] == [2, 3, 4]


def test_events_delivered_twice_are_broadcast_once() -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1, 2)))
    outbox = joined(hub, "c")
    drain(outbox)
    hub.handle(Deliver("e1", 1, numbered(2, 3)))
    assert [m["seq"] for m in drain(outbox)] == [3]


def test_a_new_epoch_closes_clients_with_1012_and_they_resume_unrecovered() -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1, 2, 3)))
    outbox = joined(hub, "c")
    hub.handle(Deliver("e2", 0, ()))
    assert outbox.close_reason is not None and outbox.close_reason.code == 1012
    assert (hub.state.epoch, hub.state.last_seq, hub.state.clients) == ("e2", 0, {})
    again = joined(hub, "c", since=3, epoch="e1")
    welcome = drain(again)[0]["data"]
    assert welcome["recovered"] is False and welcome["epoch"] == "e2"


def test_a_gap_in_the_numbering_closes_clients_and_resume_reports_it() -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1, 2)))
    outbox = joined(hub, "c")
    hub.handle(Deliver("e1", 9, numbered(10, 11)))
    assert outbox.close_reason is not None and outbox.close_reason.code == 1012
    again = joined(hub, "c", since=2, epoch="e1")
    welcome = drain(again)[0]["data"]
    assert welcome["recovered"] is False and welcome["last_seq"] == 11


def test_a_notice_reaches_subscribers_unnumbered_and_is_never_replayed() -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1)))
    outbox = joined(hub, "c")
    drain(outbox)
    hub.handle(Notice(make_event("connection_error", {"broker": "redis://r:6379/0"})))
    (notice,) = drain(outbox)
    assert notice["type"] == "connection_error" and notice["seq"] is None
    assert hub.state.last_seq == 1
    resumed = joined(hub, "r", since=0, epoch="e1")
    assert [m["seq"] for m in drain(resumed)] == [None, 1]  # welcome, then event 1 only


def test_one_process_answers_a_repeated_idempotency_key_with_the_same_seqs() -> None:
    hub = HubActor(HubConfig(), heartbeat_interval_s=1.0)
    outbox = joined(hub, "c")
    drain(outbox)
    answers = []
    for _ in range(2):
        reply_send, reply_receive = trio.open_memory_channel[tuple[int, ...]](1)
        events = (make_event("notification", {"a": 1}), make_event("notification", {"a": 2}))
        hub.handle(Publish(events, reply_send, idempotency_key="k1"))
        answers.append(reply_receive.receive_nowait())
    assert answers == [(1, 2), (1, 2)]
    assert [m["data"]["a"] for m in drain(outbox)] == [1, 2]


async def test_a_resume_from_a_seq_this_node_has_not_read_yet_waits_for_it() -> None:
    """The client saw seq 3 on a node further along the stream: here it joins once 3 is in."""
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1, 2)))
    outbox = joined(hub, "c", since=3, epoch="e1")
    assert drain(outbox) == [] and "c" not in hub.state.clients
    hub.handle(Deliver("e1", 2, numbered(3, 4)))
    welcome, *replayed = drain(outbox)
    assert welcome["data"]["recovered"] is True
    assert [m["seq"] for m in replayed] == [4]


async def test_a_resume_from_a_seq_the_cluster_never_gave_joins_unrecovered_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = node_hub()
    hub.handle(Deliver("e1", 0, numbered(1)))
    outbox = joined(hub, "c", since=500, epoch="e1")
    await trio.sleep(CATCH_UP_S + 0.1)
    hub.handle(Deliver("e1", 1, ()))  # the broker link's tick after a quiet read
    welcome = drain(outbox)[0]["data"]
    assert welcome["recovered"] is False and welcome["last_seq"] == 1


async def test_a_client_that_leaves_while_waiting_is_never_joined() -> None:
    hub = node_hub()
    outbox = joined(hub, "c", since=3, epoch=hub.state.epoch)
    hub.handle(Leave("c"))
    hub.handle(Deliver(hub.state.epoch, 0, numbered(1, 2, 3)))
    assert drain(outbox) == [] and hub.state.clients == {}
