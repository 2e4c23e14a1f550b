"""The hub's decisions, with no I/O: numbering, history, the client table and subscriptions.

`HubState` is what the hub actor wraps in a loop. It also keeps the newest state of each
snapshot key (`sigma.hub.snapshots`), replayed to a client right after its welcome and to a
client that subscribes to a type it did not have. Every method is synchronous and never waits on
a client: delivery is `Outbox.put` then `flush`. Each broadcast counts the clients whose queues
are deep; when too many are, the herd lags (`herd.lagging`, `sigma.hub.overload`) and the hub's
intake takes no new events until it has recovered. A client whose queue is full keeps the event
past its bound and is put on probation (`probation`), which closes the intake too; it is cut off
(4008) only once the grace has passed and it still lags far behind the rest (`review_probation`,
or the next broadcast that finds it full), or once it has held the intake closed for most of the
pacing window while the rest were level (it paces the publishers: `review_probation`). One
client's failure costs that client only:
any exception while delivering to it (its direct write included) closes it with 1011, and the
hub goes on.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import structlog
import trio

from sigma.hub.frames import Frame, build_frame, reply_frame
from sigma.hub.history import IDEMPOTENCY_KEYS_KEPT, PublishedKeys, ResumeHistory
from sigma.hub.messages import Client
from sigma.hub.outbox import SNAPSHOT_TYPES, Outbox, OutboxClosed, SlowConsumer
from sigma.hub.overload import (
    CUT_RULES,
    CutRule,
    HerdWatch,
    Probation,
    lags_far_behind,
    others_of,
)
from sigma.hub.snapshots import SnapshotCache
from sigma.hub.subscriptions import SubscriptionCommand, shared_types, subscriptions_after
from sigma.protocol.client_frames import ProtocolViolation
from sigma.protocol.codes import CloseCode
from sigma.protocol.event_types import ALL_EVENT_TYPES
from sigma.protocol.replies import WelcomeFields, encode_welcome, subscriptions_reply
from sigma.protocol.server_messages import Event, encode, encode_event

log = structlog.get_logger("sigma.hub")


def snapshot_key_of(event: Event) -> str | None:
    """Which thing a snapshot event describes (per agent where there is one); None otherwise."""
    if event.type not in SNAPSHOT_TYPES:
        return None
    entity = event.data.get("agent_id") or event.data.get("id")
    return f"{event.type}:{entity}" if entity is not None else event.type


@dataclass(frozen=True)
class JoinResult:
    """What a join produced: the welcome's `recovered` flag and how many events were replayed.

    `snapshots`: how many snapshot frames (state on join) followed the welcome.
    """

    recovered: bool | None
    replayed: int
    snapshots: int = 0


class Broadcast(NamedTuple):
    """What one broadcast did: the event's seq, and how many clients got, skipped or lost it.

    `deep`: how many subscribers' queues were at least half full afterwards; `kept`: a full
    client was kept past its bound, on probation: the hub takes no new events meanwhile. A
    named tuple, as `Frame` is: one per event.
    """

    seq: int
    sent_to: int
    skipped: int
    cut_off: int
    deep: int = 0
    kept: bool = False


class HubState:
    """Numbering, resume history and the subscription table of one hub incarnation.

    A new incarnation has a new `epoch`: `seq` values are comparable only within one epoch.
    """

    def __init__(
        self,
        *,
        history_size: int,
        max_subscriptions: int,
        heartbeat_interval_s: float,
        epoch: str | None = None,
        node_id: str = "",
        slow_client_grace_s: float = 1.0,
    ) -> None:
        """`slow_client_grace_s`: how long a full client is on probation before it may be cut
        off (`[hub] slow_client_grace_s`)."""
        self.epoch = epoch or uuid.uuid4().hex[:16]
        self.node_id = node_id
        self.last_seq = 0
        self.last_heartbeat_at: str | None = None
        """When this node's newest heartbeat was broadcast (its timestamp), for the welcome."""
        self.max_subscriptions = max_subscriptions
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clients: dict[str, Client] = {}
        self._by_type: dict[str, dict[str, Client]] = {t: {} for t in ALL_EVENT_TYPES}
        self.history = ResumeHistory(history_size)
        self.published = PublishedKeys(IDEMPOTENCY_KEYS_KEPT)
        """The seqs each idempotency key got: kept with the numbering, so across hub restarts."""
        self.slow_disconnects = 0
        self.cut_by_rule: dict[CutRule, int] = dict.fromkeys(CUT_RULES, 0)
        """`slow_disconnects` by the rule that cut them (`sigma.hub.overload`)."""
        self.kept_beyond_capacity = 0
        """Frames queued past a full client's bound while it was on probation."""
        self.herd = HerdWatch()
        self.probation = Probation(slow_client_grace_s)
        self.clock: Callable[[], float] = trio.current_time
        """Where the time of a broadcast given no `now` is read, once a client is full."""
        self._frame_bytes = 256  # the size of the last event frame: turns socket bytes to frames
        self._unflushed = 0  # events offered since the last flush: every client has them queued
        self._flushes: list[Outbox] = []
        self.snapshots = SnapshotCache()

    # --- events ---------------------------------------------------------------------------

    def broadcast(
        self, event: Event, *, alone: bool = False, seq: int | None = None, now: float | None = None
    ) -> Broadcast:
        """Number `event`, keep it for resume, and offer it to every subscribed client.

        `alone`: no other event comes with it before the next `flush()`, so there is nothing
        to coalesce it with, and an idle client's socket gets it at once. `seq`: the number it
        was given elsewhere (by the cluster's broker), above `last_seq`; by default the next.
        `now`: the trio time, for the probation of full clients (read from `clock` when a
        client is full and it is not given).
        """
        if seq is None:
            seq = self.last_seq + 1
        self.last_seq = seq
        if event.type == "heartbeat" and event.data.get("node", "") == self.node_id:
            self.last_heartbeat_at = event.timestamp
        frame = build_frame(
            encode_event(event, seq), event.type, snapshot_key_of(event), event=True
        )
        self.history.append(seq, frame)
        self.snapshots.note(event, seq)
        return self._hand_over(frame, alone=alone, seq=seq, now=now)

    def notify(self, event: Event, *, now: float | None = None) -> Broadcast:
        """Offer an unnumbered event (`seq: null`) to every subscribed client; not kept."""
        frame = build_frame(encode(event), event.type)
        return self._hand_over(frame, alone=True, seq=0, now=now)

    def restart_numbering(self, epoch: str, last_seq: int, reason: str) -> None:
        """Take up a numbering that does not follow on from ours (another epoch, or a gap).

        Every client is closed with 1012 (they resume against the new numbering) and the
        history is forgotten: its seqs mean nothing in the new one.
        """
        self.close_all(CloseCode.SERVICE_RESTART, reason)
        self.history.clear()
        self.published.clear()
        self.snapshots = SnapshotCache()  # their seqs belong to the old numbering too
        self.epoch = epoch
        self.last_seq = last_seq

    def _hand_over(self, frame: Frame, *, alone: bool, seq: int, now: float | None) -> Broadcast:
        size = self._frame_bytes = len(frame.data)
        self._unflushed += 1
        subscribers = self._by_type[frame.event_type]
        gone: list[str] = []
        flushes = self._flushes
        probation = self.probation
        unflushed = self._unflushed  # this message's events: not counted against anyone
        deep = 0
        kept = False
        fills: dict[str, float] | None = None  # read once a client on probation is due
        for client in subscribers.values():
            outbox = client.outbox
            try:
                if alone and outbox.put_alone(frame, size):
                    continue  # written at once (or left to its sender): not deep
                try:
                    due = outbox.put(frame)
                except SlowConsumer:
                    # What the client left unread before this inbox message: one request's
                    # batch is queued whole, whatever the bound, and flushed after.
                    unread = outbox.lag - (unflushed - 1)
                    if unread >= outbox.capacity:
                        client_id = client.client_id
                        if now is None:
                            now = self.clock()
                        probation.start(client_id, now)
                        if probation.due(client_id, now):
                            if fills is None:
                                fills = self.fills_by_id()
                            if lags_far_behind(fills[client_id], others_of(fills, client_id)):
                                probation.release(client_id)
                                raise
                        self.kept_beyond_capacity += 1
                        kept = True
                    due = outbox.put_beyond_capacity(frame)
                if due:
                    if alone:
                        outbox.flush()
                    else:
                        flushes.append(outbox)
                if 2 * (outbox.lag - unflushed) >= outbox.capacity:
                    deep += 1
            except SlowConsumer:
                self._cut_off(client, "lags_far_behind")
                gone.append(client.client_id)
            except OutboxClosed:
                gone.append(client.client_id)
            except Exception:
                self._delivery_failed(client)
                gone.append(client.client_id)
        total = len(self.clients)
        sent_to = len(subscribers) - len(gone)
        for client_id in gone:
            self.remove(client_id)
        return Broadcast(seq, sent_to, total - sent_to - len(gone), len(gone), deep, kept)

    def review_probation(self, now: float) -> int:
        """Look again at the clients on probation (when that is due): release those that
        drained, cut off (4008) those that still lag far behind the rest after the grace.
        Returns how many were cut."""
        probation = self.probation
        if not probation.due_review(now):
            return 0
        # Everyone's fill (a system call each) only when someone may be cut; until then only
        # whether those on probation have drained.
        if probation.needs_everyone(now):
            fills = self.fills_by_id()
        else:
            fills = self.fills_by_id(probation.since)
        cut = probation.review(fills, now)
        for client_id, rule in cut:
            client = self.clients.get(client_id)
            if client is not None:
                self._cut_off(client, rule)
                self.remove(client_id)
        return len(cut)

    def _cut_off(self, client: Client, rule: CutRule) -> None:
        self.slow_disconnects += 1
        self.cut_by_rule[rule] += 1
        client.outbox.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def fills_by_id(self, only: Iterable[str] | None = None) -> dict[str, float]:
        """`fills(with_sockets=True)` by client id, of every client or of those in `only`
        that are still connected: what probation reads."""
        size = self._frame_bytes
        unflushed = self._unflushed
        clients = self.clients
        chosen: Iterable[tuple[str, Client]]
        if only is None:
            chosen = clients.items()
        else:
            chosen = [(client_id, clients[client_id]) for client_id in only if client_id in clients]
        return {
            client_id: max(0.0, c.outbox.lag_with_socket(size) - unflushed) / c.outbox.capacity
            for client_id, c in chosen
            if c.outbox.close_reason is None
        }

    def fills(self, *, with_sockets: bool = False) -> list[float]:
        """Every client's `Outbox.lag` against its capacity, 0 up (more than 1 past the
        bound): what the overload rule reads. `with_sockets`: add what each socket's kernel
        buffer holds (`Outbox.lag_with_socket`; one system call per client).

        The events of the inbox message being handled are not counted: every client has them
        queued until the flush that follows, whether it keeps up or not. Clients already closed
        are left out: they wait in the table only until their next delivery (or their `Leave`,
        which may be lost when the inbox is full), and must hold no gate closed meanwhile.
        """
        if with_sockets:
            return list(self.fills_by_id().values())
        unflushed = self._unflushed
        return [
            max(0, c.outbox.lag - unflushed) / c.outbox.capacity
            for c in self.clients.values()
            if c.outbox.close_reason is None
        ]

    def flush(self) -> None:
        """Hand every client touched since the last flush what was queued for it."""
        self._unflushed = 0
        flushes, self._flushes = self._flushes, []
        for outbox in flushes:
            try:
                outbox.flush()
            except Exception:
                self._delivery_failed(outbox)

    def _delivery_failed(self, failed: Client | Outbox) -> None:
        """Close one client whose delivery raised, with 1011; the hub and the others go on.

        Called inside the `except` block, so the log carries the traceback. A client only
        known by its outbox leaves the table at its next delivery (its outbox is closed).
        """
        outbox = failed.outbox if isinstance(failed, Client) else failed
        client_id = failed.client_id if isinstance(failed, Client) else None
        log.exception("Delivery to a client failed; closing it", client_id=client_id)
        with contextlib.suppress(Exception):
            outbox.close(CloseCode.INTERNAL_ERROR, "internal error")

    # --- clients --------------------------------------------------------------------------

    def join(self, client: Client, *, since: int | None, epoch: str | None) -> JoinResult | None:
        """Add a client: welcome it, replay what it missed when it resumes, then go live.

        Runs without awaiting, so no event can slip between the replay and live delivery.
        Returns None, changing nothing, for a client that left while its join was on its way.

        Its subscriptions are what its session asked for, within what it is allowed. Unless it
        resumed with `recovered: true` (its replay brings it up to date), the welcome is followed
        by the snapshots of its types.
        """
        if client.outbox.close_reason is not None:
            return None
        client.allowed = shared_types(client.allowed)
        client.subscriptions = shared_types(client.subscriptions & client.allowed)
        recovered, backlog = self._resume(client, since, epoch)
        snapshots = [] if recovered else self.snapshots.frames(client.subscriptions)
        try:
            self._welcome(client, recovered, [*backlog, *snapshots])
        except OutboxClosed:
            return None
        except Exception:
            self._delivery_failed(client)
            return None
        self.clients[client.client_id] = client
        self._index(client)
        return JoinResult(recovered, len(backlog), len(snapshots))

    def _welcome(self, client: Client, recovered: bool | None, following: list[Frame]) -> None:
        fields = WelcomeFields(
            client_id=client.client_id,
            subscriptions=client.subscriptions,
            last_seq=self.last_seq,
            epoch=self.epoch,
            heartbeat_interval_s=self.heartbeat_interval_s,
            recovered=recovered,
            node=self.node_id,
            last_heartbeat_at=self.last_heartbeat_at,
            client_count=len(self.clients) + 1,  # it joins right after its welcome
        )
        payload = encode_welcome(fields)
        client.outbox.put(build_frame(payload, "welcome"), "reply")
        for frame in following:  # the replayed backlog, or the snapshots
            client.outbox.put(frame, "reply")
        client.outbox.flush()

    def _resume(
        self, client: Client, since: int | None, epoch: str | None
    ) -> tuple[bool | None, list[Frame]]:
        if since is None:
            return None, []
        if epoch is not None and epoch != self.epoch:
            return False, []
        backlog = self.history.since(since, self.last_seq, client.subscriptions)
        return (False, []) if backlog is None else (True, backlog)

    def remove(self, client_id: str) -> None:
        """Forget a client (it left, or was cut off); unknown ids are ignored."""
        client = self.clients.pop(client_id, None)
        self.probation.release(client_id)
        if client is not None:
            for event_type in client.subscriptions:
                self._by_type[event_type].pop(client_id, None)

    def close_all(self, code: int, reason: str) -> None:
        """Close every client's outbox (the hub is going away) and empty the table."""
        for client in self.clients.values():
            client.outbox.close(code, reason)
        self.clients.clear()
        for subscribers in self._by_type.values():
            subscribers.clear()

    def _index(self, client: Client) -> None:
        for event_type in ALL_EVENT_TYPES:
            if event_type in client.subscriptions:
                self._by_type[event_type][client.client_id] = client
            else:
                self._by_type[event_type].pop(client.client_id, None)

    # --- subscriptions --------------------------------------------------------------------

    def command(self, client_id: str, message: SubscriptionCommand) -> None:
        """Apply a subscription command and reply to the client; errors become error replies.

        The reply is followed by the snapshots of the types the command added.
        """
        client = self.clients.get(client_id)
        if client is None:
            return
        before = client.subscriptions
        try:
            client.subscriptions = shared_types(
                subscriptions_after(
                    client.subscriptions, client.allowed, message, self.max_subscriptions
                )
            )
        except ProtocolViolation as violation:
            reply = violation.reply()
        else:
            self._index(client)
            reply = subscriptions_reply(client.subscriptions, message.id, self.last_seq)
        try:
            client.outbox.put(reply_frame(reply), "reply")
            for frame in self.snapshots.frames(client.subscriptions - before):
                client.outbox.put(frame, "reply")
            client.outbox.flush()
        except OutboxClosed:
            self.remove(client_id)
        except Exception:
            self._delivery_failed(client)
            self.remove(client_id)
