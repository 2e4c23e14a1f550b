"""The hub actor: numbers every event and fans it out to the clients subscribed to its type.

Reads: one inbox (`trio.MemoryReceiveChannel[HubMessage]`) that the poller, the heartbeat, the
publish API and every client session write to (each with its own clone of the send end).
Writes: each client's `Outbox`, never waiting: `offer` per event, then one `flush` per inbox
message, which writes straight to an idle client's socket when it takes the bytes at once.
Exits (`sigma.hub.loop.run_hub`): when cancelled, or when every send end of the inbox is
closed; on exit every client's outbox is closed with 1012 (service restart).

What a hub restart costs clients: nothing is lost. The numbering and the resume history live in
a `HubState` that the tree creates once and hands to every incarnation of the hub, so a
restarted hub keeps its epoch and its `seq`. Its clients, closed with 1012, reconnect with
`?since=<last seq>&epoch=<epoch>` and get everything they missed (`recovered: true`); an event
the crashed incarnation numbered but had not yet delivered to everyone is in that history too.
Without a `HubState` passed in (tests, or a library user) each incarnation starts a new epoch.

With a `Metrics` it counts every broadcast (one call per event, never per client) and lets
scrapes read its client table.

The inbox's receive end belongs to whoever built the tree, not to the hub, so messages that
arrive while the hub is being restarted wait in its buffer instead of being discarded.

The task that runs it, how it takes messages from the inbox, its watchdog beats and its fault
point are `sigma.hub.loop`'s.

Overload: after each broadcast the actor tells `state.herd` how many clients' queues were deep;
while the herd lags, or a client whose queue is full is on probation (`state.probation`), its
`HubIntake` (`sigma.hub.intake`) lets no new event in, and the actor says so once in the log
(and once again when the gate opens). Probation is reviewed after every inbox message and
whenever a producer asks the gate, so a stalled client is cut off once the grace has passed.
Under `drop_oldest` the herd is not watched and nobody is put on probation: lagging clients lose
their oldest events, by that policy's meaning. The
intake may also hand an idle hub a publish to handle at once, on the publisher's task
(`publish_now`); a bug raised there is re-raised by the hub's own loop (`crash_with`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import structlog
import trio

from sigma.config.pipeline import HubConfig
from sigma.faults import FaultPoint
from sigma.hub.messages import (
    UNDELIVERABLE,
    Command,
    Deliver,
    HubMessage,
    Join,
    Leave,
    Notice,
    Publish,
    PublishHeartbeat,
)
from sigma.hub.overload import CUT_RULES
from sigma.hub.state import HubState
from sigma.metrics import Metrics
from sigma.protocol.server_messages import Event, make_event

log = structlog.get_logger("sigma.hub")


CATCH_UP_S = 2.0
"""How long a cluster client resuming from a seq this node has not read yet waits for it; then
it joins anyway (`recovered: false`: that seq is not in this cluster's numbering)."""

Numbering = Callable[[Publish], None]
"""Takes events to be numbered elsewhere (the cluster's broker), without waiting; they come back
to the hub as `Deliver`. It refuses what it cannot take by closing the publish's `reply`."""


def new_hub_state(config: HubConfig, *, heartbeat_interval_s: float, node_id: str = "") -> HubState:
    """A fresh numbering (new epoch, seq 0) and empty history and client table."""
    return HubState(
        history_size=config.history_size,
        max_subscriptions=config.max_subscriptions,
        heartbeat_interval_s=heartbeat_interval_s,
        node_id=node_id,
        slow_client_grace_s=config.slow_client_grace_s,
    )


class HubActor:
    """The thin loop around `HubState`; one instance per incarnation of the hub.

    Without `numbering` the hub numbers every `Publish` itself (one process). With it, a
    `Publish` (and each heartbeat) goes to `numbering`, and the hub broadcasts the `Deliver`
    messages that come back, already numbered, as every node of the cluster does. `node_id`
    names this node in its heartbeats.
    """

    def __init__(
        self,
        config: HubConfig,
        *,
        heartbeat_interval_s: float,
        metrics: Metrics | None = None,
        state: HubState | None = None,
        numbering: Numbering | None = None,
        node_id: str = "",
    ) -> None:
        self.state = state or new_hub_state(
            config, heartbeat_interval_s=heartbeat_interval_s, node_id=node_id
        )
        self._numbering = numbering
        self._node_id = node_id
        self._waiting: list[tuple[float, Join]] = []  # joins ahead of this node, with deadlines
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._metrics = metrics
        self._queue_size = config.queue_size
        self._cuts_seen = dict.fromkeys(CUT_RULES, 0)  # state.cut_by_rule already counted
        self._departed_high_water = 0  # the deepest queue of a client no longer in the table
        self._watch_herd = config.slow_client_policy != "drop_oldest"
        self._deepest = 0  # the most deep queues after one broadcast of the current message
        self._probations_seen = 0  # state.probation.started already logged
        self._gate_closed = False  # for the log: said once when it closes, once when it opens
        self._failure: Exception | None = None
        self.fault: FaultPoint = FaultPoint("hub.publish")

    def client_count(self) -> int:
        """How many clients are connected (for metrics)."""
        return len(self.state.clients)

    def queue_high_water(self) -> int:
        """The deepest any client's queue has been under this hub, in messages (for metrics).

        Walks the client table: meant for a scrape, not for every event.
        """
        clients = self.state.clients.values()
        current = max((client.outbox.high_water for client in clients), default=0)
        return max(current, self._departed_high_water)

    def queue_depths(self) -> list[int]:
        """Every connected client's queue depth now (for metrics)."""
        return [len(client.outbox) for client in self.state.clients.values()]

    def herd_lagging(self) -> bool:
        """Whether the hub takes no new events because most clients lag (for metrics)."""
        return self.state.herd.lagging

    def on_probation(self) -> int:
        """How many clients are on probation now (for metrics)."""
        return len(self.state.probation.since)

    def herd_lag_episodes(self) -> int:
        """How many times the herd started lagging (for metrics)."""
        return self.state.herd.episodes

    def kept_beyond_queue(self) -> int:
        """Events queued past a full client's bound while it was on probation (for metrics)."""
        return self.state.kept_beyond_capacity

    def handle(self, message: HubMessage) -> None:
        """Act on one inbox message, then hand each touched client what it was given."""
        self._act(message)
        self.state.flush()
        self._note_herd()
        if self.state.probation:
            self._review(trio.current_time())
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    # --- what the intake asks (sigma.hub.intake.IntakeHub) --------------------------------

    def accepts_events(self, now: float | None = None) -> bool:
        """False while the herd lags or a client is on probation; looks at the clients'
        depths again when that is due (and cuts off who lags far behind after the grace).
        `now`: the trio time (read when needed if not given)."""
        herd = self.state.herd
        probation = self.state.probation
        if not (
            herd.lagging
            or probation.since
            or self._gate_closed
            or probation.started != self._probations_seen
        ):
            return True  # the usual case, asked on every publish: nothing to look at or log
        if now is None:
            now = trio.current_time()
        if herd.due_recheck(now):
            herd.recheck(self.state.fills(with_sockets=True), now)
        self._review(now)
        return not (herd.lagging or self.state.probation)

    def _review(self, now: float) -> None:
        """Probation's review, and the log lines for the gate closing and opening."""
        state = self.state
        if state.probation and state.review_probation(now):
            self._note_slow_clients("probation")
        probation = state.probation
        if probation.started > self._probations_seen:
            self._probations_seen = probation.started
            log.warning(
                "A client's queue is full: taking no new events while it catches up",
                on_probation=len(probation.since),
                grace_s=probation.grace_s,
                queue_size=self._queue_size,
            )
        closed = state.herd.lagging or bool(probation)
        if closed != self._gate_closed:
            self._gate_closed = closed
            if not closed:
                log.warning(
                    "Clients caught up: taking new events again", clients=len(state.clients)
                )

    def can_handle_now(self) -> bool:
        """True unless the `hub.publish` fault point is armed (it must see every message) or
        a cluster's broker numbers the events (the publish goes its way, through the loop)."""
        return not self.fault.armed and self._failure is None and self._numbering is None

    def publish_now(self, events: tuple[Event, ...], key: str | None) -> tuple[int, ...]:
        """Broadcast `events` on the caller's task, as the loop would; return their seqs (the
        first publish's, for a repeated idempotency `key`)."""
        seqs = self._publish(events, key)
        self.state.flush()
        self._note_herd()
        if self.state.probation.since:
            self._review(trio.current_time())
        return seqs

    def _publish(self, events: tuple[Event, ...], key: str | None) -> tuple[int, ...]:
        """Number and broadcast `events`, or answer a repeated key's first seqs."""
        seqs = self.state.published.get(key) if key is not None else None
        if seqs is None:
            if len(events) == 1:  # the usual publish: no generator for one event
                seqs = (self._broadcast(events[0], alone=True),)
            else:
                seqs = tuple(self._broadcast(event) for event in events)
            if key is not None:
                self.state.published.remember(key, seqs)
        return seqs

    def crash_with(self, error: Exception) -> None:
        """Raise `error` from the hub's loop once it has handled its next message."""
        self._failure = error

    def _note_herd(self) -> None:
        deepest, self._deepest = self._deepest, 0
        if not deepest or not self._watch_herd:
            return
        clients = len(self.state.clients)
        if self.state.herd.after_broadcast(deepest, clients, trio.current_time()):
            log.warning(
                "Most clients lag: taking no new events until they catch up",
                deep_queues=deepest,
                clients=clients,
                queue_size=self._queue_size,
            )

    def _act(self, message: HubMessage) -> None:
        match message:
            case Publish() if message.withdrawn():
                log.info("Publish withdrawn by its publisher", events=len(message.events))
            case Publish() if self._numbering is not None:
                self._numbering(message)
            case Publish(events, reply, key):
                seqs = self._publish(events, key)
                if reply is not None:
                    with contextlib.suppress(*UNDELIVERABLE):
                        reply.send_nowait(seqs)
            case PublishHeartbeat(data):
                data = {
                    **data,
                    "node": self._node_id,
                    "client_count": len(self.state.clients),
                    "last_seq": self.state.last_seq,
                }
                heartbeat = make_event("heartbeat", data)
                if self._numbering is not None:
                    self._numbering(Publish((heartbeat,)))
                else:
                    self._broadcast(heartbeat, alone=True)
                if self._metrics is not None:
                    self._metrics.heartbeat_sent()
            case Deliver(epoch, after, events):
                self._deliver(epoch, after, events)
            case Notice(event):
                self.state.notify(event)
            case Join() if self._ahead_of_this_node(message):
                self._waiting.append((trio.current_time() + CATCH_UP_S, message))
            case Join():
                self._join(message)
            case Leave(client_id):
                self._waiting = [
                    (t, j) for t, j in self._waiting if j.client.client_id != client_id
                ]
                leaving = self.state.clients.get(client_id)
                if leaving is not None:
                    high_water = max(self._departed_high_water, leaving.outbox.high_water)
                    self._departed_high_water = high_water
                self.state.remove(client_id)
            case Command(client_id, command):
                self.state.command(client_id, command)

    def close_waiting(self, code: int, reason: str) -> None:
        """Close the clients whose joins wait for this node to catch up (the hub is going)."""
        for _, join in self._waiting:
            join.client.outbox.close(code, reason)
        self._waiting = []

    def _join(self, join: Join) -> None:
        client = join.client
        result = self.state.join(client, since=join.since, epoch=join.epoch)
        if not self._debug:  # one join per accepted connection: skip building a logger for nothing
            return
        if result is None:
            log.debug("Client left before it joined", client_id=client.client_id)
        else:
            log.debug(
                "Client joined",
                client_id=client.client_id,
                recovered=result.recovered,
                replayed=result.replayed,
                total_clients=len(self.state.clients),
            )

    def _ahead_of_this_node(self, join: Join) -> bool:
        """A cluster client resuming from a seq this node has not read yet (it saw it on a
        node further along the stream): its join waits until this node catches up."""
        state = self.state
        return (
            self._numbering is not None
            and join.since is not None
            and join.since > state.last_seq
            and (join.epoch is None or join.epoch == state.epoch)
        )

    def _admit_waiting(self) -> None:
        """Join the waiting clients this node has caught up with, or that waited too long."""
        if not self._waiting:
            return
        now = trio.current_time()
        still: list[tuple[float, Join]] = []
        for deadline, join in self._waiting:
            if now < deadline and self._ahead_of_this_node(join):
                still.append((deadline, join))
            else:
                self._join(join)
        self._waiting = still

    def _deliver(self, epoch: str, after: int, events: tuple[tuple[int, Event], ...]) -> None:
        state = self.state
        if epoch != state.epoch or after > state.last_seq:
            reason = "new epoch" if epoch != state.epoch else "this node missed events"
            log.warning(
                "Numbering restarted: clients closed to resume",
                reason=reason,
                old_epoch=state.epoch,
                epoch=epoch,
                old_last_seq=state.last_seq,
                last_seq=after,
                clients=len(state.clients),
            )
            state.restart_numbering(epoch, after, reason)
        fresh = [(seq, event) for seq, event in events if seq > state.last_seq]
        alone = len(fresh) == 1
        for seq, event in fresh:
            self._broadcast(event, alone=alone, seq=seq)
        self._admit_waiting()

    def _broadcast(self, event: Event, *, alone: bool = False, seq: int | None = None) -> int:
        outcome = self.state.broadcast(event, alone=alone, seq=seq)
        if outcome.deep > self._deepest:
            self._deepest = outcome.deep
        if self._metrics is not None:
            self._metrics.count_broadcast(event.type, outcome.sent_to)
        if self._debug:
            log.debug(
                f"Broadcasting {event.type.replace('_', ' ')} event",
                msg_type=event.type,
                seq=outcome.seq,
                sent_to=outcome.sent_to,
                skipped=outcome.skipped,
                total_clients=len(self.state.clients),
            )
        if outcome.cut_off:  # slow clients, or clients that had left already
            self._note_slow_clients(event.type)
        return outcome.seq

    def _note_slow_clients(self, event_type: str) -> None:
        cuts = {
            rule: count - self._cuts_seen[rule]
            for rule, count in self.state.cut_by_rule.items()
            if count > self._cuts_seen[rule]
        }
        if not cuts:
            return
        self._cuts_seen = dict(self.state.cut_by_rule)
        # A client is cut off when its queue is full: its high-water mark was the queue's size.
        self._departed_high_water = max(self._departed_high_water, self._queue_size)
        for rule, count in cuts.items():
            if self._metrics is not None:
                self._metrics.count_slow_disconnects(count, rule)
            log.info("Slow clients cut off", msg_type=event_type, count=count, rule=rule)
