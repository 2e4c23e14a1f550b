"""What `GET /metrics` reports: Prometheus metrics in a registry of Sigma's own.

One `Metrics` object is made with the tree (`sigma.app.serve`, or a test harness) and passed
down to the parts it counts: no global registry, so two trees in one process (tests) never share
a number. The parts call small synchronous hooks; the gateway calls `render()` on each scrape.

Counts on the hub's hot path (every broadcast) are plain integers read through a collector at
scrape time, so a broadcast costs a few additions and no lock. Values that only matter when
someone looks (clients connected, the deepest client queue, the heartbeat's age) are computed on
scrape. The rest are ordinary `prometheus_client` counters and a histogram.

Metric (type, labels): what it counts.

- `sigma_clients_connected` (gauge): WebSocket clients in the hub's table, read on scrape.
- `sigma_events_published_total` (counter, `type`): events the hub broadcast.
- `sigma_events_delivered_total` (counter): each broadcast adds the clients it was queued for.
- `sigma_events_dropped_total` (counter, `reason`): events a client did not get;
  `slow_consumer` counts one per client whose full queue got it cut off; `drop_oldest` and
  `conflate` count every event those policies removed from a full queue.
- `sigma_slow_client_disconnects_total` (counter, `rule`): clients closed with 4008, by the
  rule that cut them (`sigma.hub.overload`): `lags_far_behind`, its queue still full after its
  probation (`[hub] slow_client_grace_s`) while the median of the other clients was less than
  a quarter full; `paces_publishers`, on probation for more than half of the last ten graces
  while the rest were level.
- `sigma_hub_clients_on_probation` (gauge): clients whose queue reached its bound and who have
  not yet drained or been cut; while it is above 0 the hub takes no new events.
- `sigma_client_queue_depth_messages` (histogram, on scrape): every connected client's queue
  depth now, so the distribution shows whether one client lags or the whole herd does.
- `sigma_hub_herd_lagging` (gauge, 0 or 1): the hub takes no new events because most clients'
  queues are at least half full; `sigma_hub_herd_lag_episodes_total` (counter) counts the times
  that started; `sigma_events_kept_beyond_queue_total` (counter) the events queued past a full
  client's bound (on probation) instead of cutting it.
- `sigma_publish_refused_total` (counter, `reason`): publishes answered 503 `overloaded`, by
  `herd_lagging` or `inbox_full`; `sigma_producer_waits_total` (counter): producers (publish
  API, poller, heartbeat) that found the hub taking no events and waited.
- `sigma_client_queue_high_water_messages` (gauge): the deepest any client's queue has been.
- `sigma_heartbeat_age_seconds` (gauge): since the hub last broadcast a heartbeat (or since
  start, before the first one), computed on scrape.
- `sigma_actor_restarts_total` (counter, `actor`, `reason`): from the supervision event stream.
- `sigma_actor_hangs_total` (counter, `actor`): `ChildHung` events, likewise.
- `sigma_poll_duration_seconds` (histogram, `method`): each engine call, answered or not.
- `sigma_rpc_errors_total` (counter, `method`, `code`): `rpc_error` events the poller published.

`reason` of a restart is "hung", "normal" (a permanent child that returned) or the exception's
class name: bounded, unlike the full exit reason the log shows.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from sigma.hub.overload import CUT_RULES, CutRule
from sigma.protocol.event_types import ALL_EVENT_TYPES
from sigma.supervision.spec import ChildHung, RestartScheduled, SupervisionEvent

__all__ = ["METRICS_CONTENT_TYPE", "HubView", "Metrics", "restart_reason_label"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The `content-type` of `Metrics.render()`'s output."""

SLOW_CONSUMER = "slow_consumer"
QUEUE_DROP_POLICIES = ("drop_oldest", "conflate")


QUEUE_DEPTH_BUCKETS = (0, 1, 4, 16, 64, 256, 1024, 4096, 16384)


class HubView(Protocol):
    """What a scrape asks of the running hub (`sigma.hub.actor.HubActor` is one)."""

    def client_count(self) -> int:
        """How many clients are connected now."""
        ...

    def queue_high_water(self) -> int:
        """The deepest any client's queue has been under this hub, in messages."""
        ...


class OverloadView(Protocol):
    """What a scrape asks about overload (`sigma.hub.actor.HubActor` is one)."""

    def queue_depths(self) -> list[int]:
        """Every connected client's queue depth now, in messages."""
        ...

    def herd_lagging(self) -> bool:
        """Whether the hub takes no new events because most clients lag."""
        ...

    def herd_lag_episodes(self) -> int:
        """How many times the herd started lagging (this state's lifetime)."""
        ...

    def kept_beyond_queue(self) -> int:
        """Events queued past a full client's bound while it was on probation."""
        ...

    def on_probation(self) -> int:
        """How many clients are on probation now."""
        ...


class IntakeView(Protocol):
    """What a scrape asks of the hub's intake (`sigma.hub.intake.HubIntake` is one)."""

    refused: dict[str, int]
    waits: int


def restart_reason_label(reason: str) -> str:
    """The `reason` label of a restart: "hung", "normal", or the exception's class name."""
    return reason.split(":", 1)[0] or "unknown"


class Metrics:
    """The metrics of one tree, with their own `registry`; see the module docstring."""

    def __init__(self, *, started_at: float | None = None) -> None:
        self.registry = CollectorRegistry()
        self._started_at = trio.current_time() if started_at is None else started_at
        self._hub: HubView | None = None
        self._overload: OverloadView | None = None
        self._intake: IntakeView | None = None
        self._past_high_water = 0
        self._published: Tally[str] = Tally(dict.fromkeys(ALL_EVENT_TYPES, 0))
        self._delivered = 0
        self._dropped: Tally[str] = Tally(dict.fromkeys((SLOW_CONSUMER, *QUEUE_DROP_POLICIES), 0))
        self._slow_disconnects: Tally[str] = Tally(dict.fromkeys(CUT_RULES, 0))
        self._last_heartbeat_at: float | None = None
        self.restarts = Counter(
            "sigma_actor_restarts",
            "Restarts of supervised actors, by actor and the reason it exited.",
            ["actor", "reason"],
            registry=self.registry,
        )
        self.hangs = Counter(
            "sigma_actor_hangs",
            "Watched actors found hung by their supervisor's watchdog.",
            ["actor"],
            registry=self.registry,
        )
        self.poll_duration = Histogram(
            "sigma_poll_duration_seconds",
            "How long each engine call of the poller took, answered or not.",
            ["method"],
            registry=self.registry,
        )
        self.rpc_errors = Counter(
            "sigma_rpc_errors",
            "rpc_error events published by the poller, by method and JSON-RPC error code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(self._scrape))

    # --- the hub ---------------------------------------------------------------------------------

    def attach_hub(self, hub: HubView) -> None:
        """A hub incarnation started: scrapes read its clients from now on."""
        self._hub = hub
        if isinstance(hub, _OverloadCheck):
            self._overload = hub
        else:
            self._overload = None

    def attach_intake(self, intake: IntakeView) -> None:
        """Scrapes report the refused publishes and waits of this intake."""
        self._intake = intake

    def detach_hub(self, hub: HubView) -> None:
        """A hub incarnation is ending: keep its queue high-water mark, stop reading it."""
        self._past_high_water = max(self._past_high_water, hub.queue_high_water())
        if self._hub is hub:
            self._hub = None
            self._overload = None

    def count_broadcast(self, event_type: str, sent_to: int) -> None:
        """One event was broadcast and queued for `sent_to` clients."""
        self._published[event_type] += 1
        self._delivered += sent_to

    def count_slow_disconnects(self, clients: int, rule: CutRule) -> None:
        """`clients` were cut off by `rule` because their queue was full, each losing the
        event."""
        self._slow_disconnects[rule] += clients
        self._dropped[SLOW_CONSUMER] += clients

    def count_queue_drops(self, policy: str, events: int) -> None:
        """`policy` (`drop_oldest`, `conflate`) removed `events` from a client's full queue."""
        self._dropped[policy] += events

    def heartbeat_sent(self) -> None:
        """The hub broadcast a heartbeat now."""
        self._last_heartbeat_at = trio.current_time()

    # --- the supervisors -------------------------------------------------------------------------

    def observe_supervision(self, event: SupervisionEvent) -> None:
        """Count what the supervision event stream says about restarts and hangs."""
        match event:
            case RestartScheduled():
                self.restarts.labels(event.child_id, restart_reason_label(event.reason)).inc()
            case ChildHung():
                self.hangs.labels(event.child_id).inc()
            case _:
                pass

    # --- the poller ------------------------------------------------------------------------------

    def observe_poll(self, method: str, duration_s: float) -> None:
        """One engine call of `method` took `duration_s`."""
        self.poll_duration.labels(method).observe(duration_s)

    def count_rpc_error(self, method: str, code: int) -> None:
        """The poller published an `rpc_error` for `method` with JSON-RPC error `code`."""
        self.rpc_errors.labels(method, str(code)).inc()

    # --- the scrape ------------------------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def _scrape(self) -> Iterator[Metric]:
        hub = self._hub
        clients = GaugeMetricFamily("sigma_clients_connected", "WebSocket clients connected now.")
        clients.add_metric([], hub.client_count() if hub is not None else 0)
        yield clients
        published = CounterMetricFamily(
            "sigma_events_published", "Events broadcast by the hub, by type.", labels=["type"]
        )
        for event_type, count in sorted(self._published.items()):
            published.add_metric([event_type], count)
        yield published
        yield CounterMetricFamily(
            "sigma_events_delivered",
            "Events queued for a client: each broadcast adds the clients it reached.",
            value=self._delivered,
        )
        dropped = CounterMetricFamily(
            "sigma_events_dropped", "Events a client did not get, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self._dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        disconnects = CounterMetricFamily(
            "sigma_slow_client_disconnects",
            "Clients closed with 4008 because their queue was full, by the rule that cut them.",
            labels=["rule"],
        )
        for rule, count in sorted(self._slow_disconnects.items()):
            disconnects.add_metric([rule], count)
        yield disconnects
        high_water = self._past_high_water
        if hub is not None:
            high_water = max(high_water, hub.queue_high_water())
        yield GaugeMetricFamily(
            "sigma_client_queue_high_water_messages",
            "The deepest any client's queue has been since start, in messages.",
            value=high_water,
        )
        yield from self._scrape_overload()
        last = self._started_at if self._last_heartbeat_at is None else self._last_heartbeat_at
        yield GaugeMetricFamily(
            "sigma_heartbeat_age_seconds",
            "Seconds since the hub last broadcast a heartbeat (since start before the first).",
            value=trio.current_time() - last,
        )

    def _scrape_overload(self) -> Iterator[Metric]:
        overload = self._overload
        depths = overload.queue_depths() if overload is not None else []
        buckets = [(str(bound), sum(d <= bound for d in depths)) for bound in QUEUE_DEPTH_BUCKETS]
        buckets.append(("+Inf", len(depths)))
        yield HistogramMetricFamily(
            "sigma_client_queue_depth_messages",
            "Connected clients by how many messages their queue holds now.",
            buckets=buckets,
            sum_value=sum(depths),
        )
        yield GaugeMetricFamily(
            "sigma_hub_herd_lagging",
            "1 while the hub takes no new events because most clients lag.",
            value=int(overload.herd_lagging()) if overload is not None else 0,
        )
        yield CounterMetricFamily(
            "sigma_hub_herd_lag_episodes",
            "Times the herd of clients started lagging (the hub stopped taking events).",
            value=overload.herd_lag_episodes() if overload is not None else 0,
        )
        yield CounterMetricFamily(
            "sigma_events_kept_beyond_queue",
            "Events queued past a full client's bound while it was on probation.",
            value=overload.kept_beyond_queue() if overload is not None else 0,
        )
        yield GaugeMetricFamily(
            "sigma_hub_clients_on_probation",
            "Clients whose queue reached its bound, not yet drained or cut (no new events).",
            value=overload.on_probation() if overload is not None else 0,
        )
        intake = self._intake
        refused = CounterMetricFamily(
            "sigma_publish_refused",
            "Publishes answered 503 overloaded, by reason.",
            labels=["reason"],
        )
        for reason in ("herd_lagging", "inbox_full"):
            refused.add_metric([reason], intake.refused.get(reason, 0) if intake else 0)
        yield refused
        yield CounterMetricFamily(
            "sigma_producer_waits",
            "Event producers that found the hub taking no events and waited.",
            value=intake.waits if intake is not None else 0,
        )


@runtime_checkable
class _OverloadCheck(OverloadView, HubView, Protocol):
    """A hub view that also reports overload."""


class _ScrapeCollector(Collector):
    """Hands the registry the metrics that `Metrics` computes at scrape time."""

    def __init__(self, scrape: Callable[[], Iterator[Metric]]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        return self._scrape()
