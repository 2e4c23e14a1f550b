"""`sigma.metrics` and its hooks: every scrape is read back with prometheus-client's own parser.

Unit tests drive the hooks (hub, supervision stream, poller) on `autojump_clock`; the end-to-end
ones scrape `GET /metrics` of the real gateway in `running_stack` while events flow.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from helpers import eventually, make_config, running_stack
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from sigma.app import Endpoints, observe_supervision_events
from sigma.config import HubConfig, PollerConfig
from sigma.gateway.run import run_gateway
from sigma.gateway.server import Gateway
from sigma.health import HealthBoard
from sigma.hub.actor import HubActor
from sigma.hub.messages import Client, HubMessage, Join, Leave, Publish, PublishHeartbeat
from sigma.hub.outbox import Outbox
from sigma.metrics import METRICS_CONTENT_TYPE, Metrics, restart_reason_label
from sigma.poller.actor import INVALID_REPLY, run_poller
from sigma.protocol.event_types import EVENT_TYPES
from sigma.protocol.server_messages import make_event
from sigma.supervision.supervisor import (
    Backoff,
    ChildHung,
    ChildSpec,
    ChildStarted,
    DynamicSupervisor,
    Liveness,
    RestartScheduled,
    SupervisionEvent,
    Supervisor,
    SupervisorPolicy,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(metrics: Metrics) -> Samples:
    return parse(metrics.render().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def hub_with(metrics: Metrics, **config: Any) -> HubActor:
    hub = HubActor(HubConfig(**config), heartbeat_interval_s=15.0, metrics=metrics)
    metrics.attach_hub(hub)
    return hub


def publish(hub: HubActor, *event_types: str) -> None:
    hub.handle(Publish(tuple(make_event(event_type, {}) for event_type in event_types)))


# --- the hub's hooks ---------------------------------------------------------------------------


async def test_a_fresh_scrape_parses_and_every_series_starts_at_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    await trio.sleep(4.0)
    samples = scrape(metrics)
    for event_type in EVENT_TYPES:
        assert value(samples, "sigma_events_published_total", type=event_type) == 0
    assert value(samples, "sigma_events_delivered_total") == 0
    for reason in ("slow_consumer", "drop_oldest", "conflate"):
        assert value(samples, "sigma_events_dropped_total", reason=reason) == 0
    for rule in ("lags_far_behind", "paces_publishers"):
        assert value(samples, "sigma_slow_client_disconnects_total", rule=rule) == 0
    assert value(samples, "sigma_clients_connected") == 0
    assert value(samples, "sigma_client_queue_high_water_messages") == 0
    assert value(samples, "sigma_heartbeat_age_seconds") == 4.0  # no heartbeat yet: since start


async def test_broadcasts_count_once_per_event_and_add_the_clients_reached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    hub = hub_with(metrics)
    outboxes = [Outbox(64) for _ in range(3)]
    for n, outbox in enumerate(outboxes):
        hub.handle(Join(Client(f"c{n}", outbox)))
    publish(hub, "notification", "notification", "system_status")
    samples = scrape(metrics)
    assert value(samples, "sigma_events_published_total", type="notification") == 2
    assert value(samples, "sigma_events_published_total", type="system_status") == 1
    assert value(samples, "sigma_events_delivered_total") == 9
    assert value(samples, "sigma_clients_connected") == 3
    # Queues hold the welcome too, and nobody drains these.
    assert value(samples, "sigma_client_queue_high_water_messages") == 1 + 3


async def test_a_slow_client_is_counted_once_with_the_event_it_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    hub = hub_with(metrics, queue_size=2)
    hub.handle(Join(Client("slow", Outbox(2))))
    hub.handle(Join(Client("fast", Outbox(100))))
    for _ in range(2):  # one request each: a request's batch is queued whole, whatever the bound
        publish(hub, "agent_status")
    assert value(scrape(metrics), "sigma_hub_clients_on_probation") == 1
    await trio.sleep(1.0)  # slow's queue has been full (on probation) for the grace
    for _ in range(3):
        publish(hub, "agent_status")
    samples = scrape(metrics)
    assert value(samples, "sigma_slow_client_disconnects_total", rule="lags_far_behind") == 1
    assert value(samples, "sigma_slow_client_disconnects_total", rule="paces_publishers") == 0
    assert value(samples, "sigma_hub_clients_on_probation") == 0
    assert value(samples, "sigma_events_dropped_total", reason="slow_consumer") == 1
    # The welcome took one place of two: slow got 1 event and 1 past its bound (on probation),
    # then was cut off by the third; fast got all 5.
    assert value(samples, "sigma_events_delivered_total") == 2 + 5
    assert value(samples, "sigma_clients_connected") == 1
    assert value(samples, "sigma_client_queue_high_water_messages") == 1 + 5


async def test_a_client_that_paces_the_publishers_is_counted_under_its_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    hub = hub_with(metrics, queue_size=2, slow_client_grace_s=1.0)
    pacer, fast = Outbox(2), Outbox(100)
    hub.handle(Join(Client("pacer", pacer)))
    hub.handle(Join(Client("fast", fast)))
    cycles = 0
    while pacer.close_reason is None and cycles < 20:
        # Full, still full 0.6 s later, then drained, and full again 0.1 s after: on probation
        # 0.61 s of every 0.7 s.
        cycles += 1
        for _ in range(3):  # the third goes past its bound: on probation
            publish(hub, "agent_status")
        assert value(scrape(metrics), "sigma_hub_clients_on_probation") == 1
        await trio.sleep(0.6)
        fast.take_batch()
        fast.take_batch()
        hub.accepts_events()  # still full: cut once it has held the gate half the window
        for outbox in (pacer, fast):
            outbox.take_batch()
            outbox.take_batch()
        await trio.sleep(0.01)  # the hub looks again at most every RECHECK_S
        hub.accepts_events()  # drained: off probation
        await trio.sleep(0.09)
    assert pacer.close_reason is not None and pacer.close_reason.code == 4008
    assert cycles == 9  # 8 x 0.61 s held before, 0.6 s in the ninth: past 5 s of the last 10 s
    samples = scrape(metrics)
    assert value(samples, "sigma_slow_client_disconnects_total", rule="paces_publishers") == 1
    assert value(samples, "sigma_slow_client_disconnects_total", rule="lags_far_behind") == 0
    assert value(samples, "sigma_hub_clients_on_probation") == 0


async def test_the_high_water_mark_outlives_the_clients_and_the_hub(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    hub = hub_with(metrics)
    outbox = Outbox(64)
    hub.handle(Join(Client("c", outbox)))
    publish(hub, *["rpc_error"] * 7)
    hub.handle(Leave("c"))
    assert value(scrape(metrics), "sigma_client_queue_high_water_messages") == 1 + 7
    metrics.detach_hub(hub)
    samples = scrape(metrics)
    assert value(samples, "sigma_client_queue_high_water_messages") == 1 + 7
    assert value(samples, "sigma_clients_connected") == 0


async def test_heartbeat_age_is_the_time_since_the_last_heartbeat_broadcast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    hub = hub_with(metrics)
    await trio.sleep(30.0)
    hub.handle(PublishHeartbeat({}))
    await trio.sleep(7.0)
    samples = scrape(metrics)
    assert value(samples, "sigma_heartbeat_age_seconds") == 7.0
    assert value(samples, "sigma_events_published_total", type="heartbeat") == 1


# --- the supervision stream ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("hung", "hung"),
        ("normal", "normal"),
        ("ValueError: boom: with colons", "ValueError"),
        ("ExceptionGroup: two [ValueError: a; KeyError: 'b']", "ExceptionGroup"),
        ("", "unknown"),
    ],
)
def test_restart_reasons_become_bounded_labels(reason: str, label: str) -> None:
    assert restart_reason_label(reason) == label


async def test_restarts_and_hangs_from_the_supervision_stream_show_in_the_scrape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child that crashes once and one that hangs once, under a real supervisor."""
    crashes = iter([True])
    hangs = iter([True])

    async def crashes_once(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        if next(crashes, False):
            await trio.sleep(1.0)
            raise ValueError("boom")
        await trio.sleep_forever()

    async def hangs_once(
        *, liveness: Liveness, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        if not next(hangs, False):
            liveness.idle()
        await trio.sleep_forever()

    metrics = Metrics()
    events_send, events_receive = trio.open_memory_channel[SupervisionEvent](100)
    specs = [
        ChildSpec("crasher", crashes_once),
        ChildSpec("hanger", hangs_once, watchdog_s=10.0),
    ]
    no_jitter = SupervisorPolicy(backoff=Backoff(min_s=0.1, max_s=1.0, factor=0.0))
    root = Supervisor("root", specs, no_jitter, events=events_send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe_supervision_events, events_receive, metrics)
        async with events_send, trio.open_nursery() as tree:
            await tree.start(root.run)
            await trio.sleep(60.0)
            tree.cancel_scope.cancel()
    samples = scrape(metrics)
    assert value(samples, "sigma_actor_restarts_total", actor="crasher", reason="ValueError") == 1
    assert value(samples, "sigma_actor_restarts_total", actor="hanger", reason="hung") == 1
    assert value(samples, "sigma_actor_hangs_total", actor="hanger") == 1
    assert ("sigma_actor_restarts_total", frozenset({("actor", "hub")})) not in samples


async def test_other_supervision_events_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    metrics.observe_supervision(ChildStarted(supervisor="root", at=0.0, child_id="x"))
    metrics.observe_supervision(
        RestartScheduled(
            supervisor="root", at=0.0, child_id="x", delay_s=0.1, attempt=0, reason="hung"
        )
    )
    metrics.observe_supervision(ChildHung(supervisor="root", at=0.0, child_id="x", silent_for_s=1))
    samples = scrape(metrics)
    assert value(samples, "sigma_actor_restarts_total", actor="x", reason="hung") == 1
    assert value(samples, "sigma_actor_hangs_total", actor="x") == 1


# --- the poller's hooks ------------------------------------------------------------------------


async def test_the_poller_times_each_call_and_counts_rpc_errors_by_method_and_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def engine(request: httpx.Request) -> httpx.Response:
        call = orjson.loads(request.content)
        await trio.sleep(0.3)  # virtual: the call's latency
        if call["method"] == "no.such.method":
            error = {"code": -32601, "message": "Method not found"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "error": error})
        return httpx.Response(200, content=b"not json")

    metrics = Metrics()
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](64)
    poller = functools.partial(
        run_poller, transport=httpx.MockTransport(engine), rng=random.Random(1), metrics=metrics
    )
    config = PollerConfig(intervals_s={"no.such.method": 1.0, "system.status": 1.0})
    endpoints = Endpoints(engine_url="http://engine.test/rpc")
    async with trio.open_nursery() as nursery:
        await nursery.start(poller, config, endpoints, hub_send, HealthBoard())
        for _ in range(4):  # two polls of each method
            await hub_receive.receive()
        nursery.cancel_scope.cancel()
    samples = scrape(metrics)
    for method in ("no.such.method", "system.status"):
        assert value(samples, "sigma_poll_duration_seconds_count", method=method) == 2
        assert value(samples, "sigma_poll_duration_seconds_sum", method=method) == pytest.approx(
            0.6
        )
        assert value(samples, "sigma_poll_duration_seconds_bucket", method=method, le="0.25") == 0
        assert value(samples, "sigma_poll_duration_seconds_bucket", method=method, le="0.5") == 2
    assert value(samples, "sigma_rpc_errors_total", method="no.such.method", code="-32601") == 2
    invalid = str(INVALID_REPLY)
    assert value(samples, "sigma_rpc_errors_total", method="system.status", code=invalid) == 2


# --- GET /metrics on the real gateway ---------------------------------------------------------


async def get_metrics(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == METRICS_CONTENT_TYPE
    return parse(response.text)


async def test_metrics_move_as_clients_connect_and_events_flow() -> None:
    async with running_stack() as stack:
        before = await get_metrics(stack.http)
        assert value(before, "sigma_clients_connected") == 0
        async with open_websocket_url(stack.ws_url) as ws:
            with trio.fail_after(5):
                assert orjson.loads(await ws.get_message())["data"]["kind"] == "welcome"
                await stack.publish(
                    [{"type": "notification", "data": {"n": n}} for n in range(3)]
                    + [{"type": "agent_status", "data": {"agent_id": "a"}}]
                )
                for _ in range(4):
                    await ws.get_message()
            during = await get_metrics(stack.http)
        assert value(during, "sigma_clients_connected") == 1
        published = "sigma_events_published_total"
        assert value(during, published, type="notification") == 3
        assert value(during, published, type="agent_status") == 1
        assert value(during, "sigma_events_delivered_total") == 4
        assert value(during, "sigma_client_queue_high_water_messages") >= 1
        await eventually(lambda: stack.hub.client_count() == 0)  # the session has left
        await stack.publish({"type": "notification", "data": {}})  # nobody left to get it
        after = await get_metrics(stack.http)
        assert value(after, published, type="notification") == 4
        assert value(after, "sigma_events_delivered_total") == 4
        assert value(after, "sigma_clients_connected") == 0


async def test_metrics_route_answers_404_without_metrics_and_405_to_post() -> None:
    config = make_config()
    hub_send, _hub_receive = trio.open_memory_channel[HubMessage](8)
    async with trio.open_nursery() as nursery:
        sessions = await nursery.start(DynamicSupervisor("sessions").run)
        gateway = await nursery.start(
            run_gateway, Gateway(config, hub_send, sessions, HealthBoard())
        )
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            response = await http.get("/metrics")
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"
            assert (await http.post("/metrics")).status_code == 405
        nursery.cancel_scope.cancel()
