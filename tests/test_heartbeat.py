"""The heartbeat actor through a real hub: its cadence, and what a heartbeat says.

On `autojump_clock`, so "every interval_s" is checked exactly, in virtual time.
"""

from __future__ import annotations

import functools
from datetime import datetime
from itertools import pairwise
from typing import Any

import trio
import trio.testing
from helpers import OutboxReader, decode_frames

from sigma.app import RootStates
from sigma.config import HeartbeatConfig, HubConfig
from sigma.heartbeat import heartbeat_data, run_heartbeat
from sigma.hub.loop import run_hub
from sigma.hub.messages import Client, HubMessage, Join
from sigma.hub.outbox import Outbox
from sigma.supervision.supervisor import Backoff, ChildSpec, Supervisor, SupervisorPolicy

HANG_GUARD_S = 3600.0


async def receive_heartbeats(
    outbox: OutboxReader, count: int
) -> list[tuple[float, dict[str, Any]]]:
    """The next `count` heartbeats in `outbox`, each with the (virtual) time it arrived."""
    received: list[tuple[float, dict[str, Any]]] = []
    with trio.fail_after(HANG_GUARD_S):
        while len(received) < count:
            batch = await outbox.receive_batch()
            now = trio.current_time()
            received += [(now, m) for m in decode_frames(batch) if m["type"] == "heartbeat"]
    return received[:count]


def test_heartbeat_data_says_time_uptime_count_and_actors() -> None:
    data = heartbeat_data(started_at=10.0, now=25.5, beat=3, actors={"hub": "running"})
    assert datetime.fromisoformat(data.pop("server_time")).utcoffset() is not None
    assert data == {"uptime_s": 15.5, "beat": 3, "actors": {"hub": "running"}}


async def test_heartbeats_arrive_every_interval_exactly_through_a_real_hub(
    autojump_clock: trio.testing.MockClock,
) -> None:
    interval_s = 15.0
    states = {"hub": "running", "heartbeat": "running"}
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](16)
    outbox = OutboxReader(Outbox(64))
    async with trio.open_nursery() as nursery:
        hub = functools.partial(run_hub, heartbeat_interval_s=interval_s)
        await nursery.start(hub, hub_receive, HubConfig())
        await hub_send.send(Join(Client("client", outbox.outbox)))
        started_at = trio.current_time()
        heartbeat = functools.partial(
            run_heartbeat, actor_states=lambda: states, started_at=started_at - 100.0
        )
        await nursery.start(heartbeat, HeartbeatConfig(interval_s=interval_s), hub_send)
        received = await receive_heartbeats(outbox, 5)
        nursery.cancel_scope.cancel()

    arrivals = [at for at, _ in received]
    assert arrivals[0] == started_at  # the first one at once
    assert [later - earlier for earlier, later in pairwise(arrivals)] == [interval_s] * 4
    heartbeats = [message for _, message in received]
    assert [m["seq"] for m in heartbeats] == [1, 2, 3, 4, 5]
    for n, message in enumerate(heartbeats):
        data = message["data"]
        assert data["beat"] == n + 1
        assert data["uptime_s"] == 100.0 + n * interval_s  # counted from the given start
        assert data["client_count"] == 1
        assert data["last_seq"] == message["seq"] - 1  # the hub's, before this one
        assert data["actors"] == states
        assert datetime.fromisoformat(data["server_time"]).utcoffset() is not None


async def test_heartbeats_report_each_actor_of_the_tree_as_it_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flaky child crashes at 2.5 s and waits 5 s to be restarted: the beats see it."""

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if trio.current_time() < 1.0:
            await trio.sleep(2.5)
            raise ValueError("flaky")
        await trio.sleep_forever()

    hub_send, hub_receive = trio.open_memory_channel[HubMessage](16)
    states = RootStates()
    assert states() == {}  # before the tree is there, nothing to say
    specs = [
        ChildSpec(
            "hub",
            functools.partial(run_hub, heartbeat_interval_s=1.0),
            (hub_receive, HubConfig()),
        ),
        ChildSpec("flaky", flaky),
        ChildSpec(
            "heartbeat",
            functools.partial(run_heartbeat, actor_states=states),
            (HeartbeatConfig(interval_s=1.0), hub_send),
        ),
    ]
    five_s = Backoff(min_s=5.0, max_s=5.0, factor=0.0)
    root = Supervisor("root", specs, SupervisorPolicy(backoff=five_s))
    states.root = root
    outbox = OutboxReader(Outbox(64))
    await hub_send.send(Join(Client("client", outbox.outbox)))  # waits in the inbox for the hub
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        received = await receive_heartbeats(outbox, 10)
        nursery.cancel_scope.cancel()

    flaky_states = {at: message["data"]["actors"]["flaky"] for at, message in received}
    assert flaky_states == {
        0.0: "running",
        1.0: "running",
        2.0: "running",
        3.0: "restarting",
        4.0: "restarting",
        5.0: "restarting",
        6.0: "restarting",
        7.0: "restarting",
        8.0: "running",  # restarted at 7.5 s
        9.0: "running",
    }
    assert all(
        message["data"]["actors"] | {"flaky": "-"}
        == {"hub": "running", "flaky": "-", "heartbeat": "running"}
        for _, message in received
    )
