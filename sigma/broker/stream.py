"""A node's link to the cluster's Redis stream: it numbers this node's events and tails them all.

Writes: each `Publish` the hub hands over (`RedisBroker.submit`, the hub's `Numbering`) goes to
Redis as one call of the `NUMBER` script, which numbers its events atomically and appends them
to the stream; the publisher's `reply` gets the seqs only then, so nothing is answered 2xx that
is not in the stream. A publish Redis has not taken within `[broker] publish_timeout_s` is
refused (its `reply` is closed without an answer); events without a reply (poller, heartbeat)
are dropped then, and the log says how many.

Reads: the stream, from where this node stopped, with `XREAD BLOCK` in batches of up to
`READ_COUNT`, into the hub as `Deliver` messages; the hub fans them out as it does in one
process. Every node, the publisher's too, delivers an event only when it comes back from the
stream, so all nodes give it the same seq and epoch. Before each read the link waits at this
node's intake gate (`sigma.hub.intake`), as the poller does: while this node's clients lag as a
herd, or its inbox is full, the events other nodes publish wait in the stream, not in this
node's memory. A node held back for longer than the stream keeps its entries (`MAXLEN`) finds a
gap when it reads again; its hub then restarts its numbering, and its clients resume with
`recovered: false` rather than missing events unawares.

Faults: when Redis cannot be reached, the link marks `/health` degraded, tells this node's
clients with an unnumbered `connection_error` naming the broker, and tries again after a
backoff delay (`[poller] retry_min_s` .. `retry_max_s`), for as long as it takes: the clients
stay connected. When it is back with the same epoch and a numbering at least as long as this
node's, tailing resumes where it stopped and nobody misses anything. When it is back with
another epoch (it lost the stream: a restart without persistence), the hub restarts its
numbering (clients closed with 1012 resume with `recovered: false`). When it is back with this
node's epoch but a shorter numbering (a replica that lacked the tail, a lost fsync), the link
starts a new epoch itself (`NEW_EPOCH`), since those seqs would otherwise be given twice.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import coredis
import orjson
import structlog
import trio
from coredis.exceptions import RedisError, ResponseError

from sigma.backoff import Backoff
from sigma.broker.scripts import NEW_EPOCH, NUMBER, StreamKeys
from sigma.config.pipeline import BrokerConfig
from sigma.config.redaction import url_without_password
from sigma.errors import leaves
from sigma.health import HealthBoard
from sigma.hub.intake import HubIntake
from sigma.hub.messages import UNDELIVERABLE, Deliver, HubMessage, Notice, Publish
from sigma.protocol import KNOWN_EVENT_TYPES, Event, make_event

log = structlog.get_logger("sigma.broker")

READ_COUNT = 1000
BLOCK_MS = 1000
"""How long one XREAD waits for new entries; after a quiet one the link checks the epoch."""
MIN_STREAM_LENGTH = 1024
"""The stream keeps at least this many entries (or `[hub] history_size`, if more), so that a
node a little behind still finds what it has not read."""
CONNECT_TIMEOUT_S = 2.0
LINK_ERRORS = (RedisError, OSError, trio.TooSlowError)
"""What ends one connection of the link: Redis gone, refused, or not answering in time."""


def new_epoch() -> str:
    """A random epoch, as the hub's own are."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Numbered:
    """What Redis gave one publish: the epoch and the seqs, and whether it was a repeat."""

    epoch: str
    seqs: tuple[int, ...]
    repeated: bool
    last_seq: int


@dataclass
class Position:
    """Where this node is in the cluster's numbering: the epoch and the last seq it delivered.

    `last_data` is what the stream held under `last_seq` when this node read it (the entry's
    event field), so that a stream rewritten under the same epoch (a failover to a replica that
    lacked the tail, after which another node numbered past this one's position) is told apart
    from one that merely went on.
    """

    epoch: str | None = None
    last_seq: int = 0
    last_data: bytes | None = None

    def follow(self, entries: Sequence[Any], last_seq: int) -> None:
        """This node delivered `entries` (read in order, all of its epoch) up to `last_seq`."""
        self.last_seq = last_seq
        self.last_data = entries[-1].field_values.get(b"d") if entries else None


@dataclass(frozen=True)
class _Pending:
    publish: Publish
    deadline: float


class RedisBroker:
    """One node's side of the cluster: its keys, its queue of publishes, and where it is.

    Made once per tree, so that its queue and its position outlive the link's reconnections
    and restarts. `submit` is what the hub calls for every publish; `run_broker_link` does the
    talking to Redis.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        history_size: int,
        queue_size: int,
        node_id: str,
    ) -> None:
        self.config = config
        self.keys = StreamKeys.of(config.stream)
        self.node_id = node_id
        self.history_size = history_size
        self.max_length = max(history_size, MIN_STREAM_LENGTH)
        self.position = Position()
        self.url = url_without_password(config.url)
        self._send, self._receive = trio.open_memory_channel[_Pending](queue_size)

    def client(self) -> coredis.Redis[bytes]:
        """A new Redis client for `[broker] url` (the link and the lease each hold their own)."""
        return coredis.Redis.from_url(
            self.config.url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            stream_timeout=BLOCK_MS / 1000 + self.config.publish_timeout_s,
        )

    async def next_publish(self) -> tuple[Publish, float]:
        """The oldest queued publish and the trio time after which it is refused."""
        pending = await self._receive.receive()
        return pending.publish, pending.deadline

    def submit(self, publish: Publish) -> None:
        """Queue `publish` for numbering in Redis, without waiting; refuse it when full."""
        deadline = trio.current_time() + self.config.publish_timeout_s
        try:
            self._send.send_nowait(_Pending(publish, deadline))
        except trio.WouldBlock:
            _refuse(publish, "the broker's queue is full")

    async def number(self, redis: coredis.Redis[bytes], publish: Publish) -> Numbered:
        """Run the `NUMBER` script for `publish` (no events: only read the epoch and seq)."""
        key = publish.idempotency_key
        idempotency_key = self.keys.idempotency_prefix + key if key else self.keys.meta
        arguments: list[str | bytes | int] = [
            self.max_length,
            new_epoch(),
            publish.fence or "",
            key or "",
            int(self.config.idempotency_s * 1000),
            *(_payload(event) for event in publish.events),
        ]
        reply = await redis.eval(
            NUMBER,
            keys=[self.keys.events, self.keys.meta, self.keys.lease, idempotency_key],
            args=arguments,
        )
        epoch, first, count, last = _strings(reply)
        seqs = tuple(range(int(first), int(first) + int(count)))
        return Numbered(epoch, seqs, repeated=last == "-1", last_seq=int(last))


async def run_broker_link(
    broker: RedisBroker,
    intake: HubIntake,
    health: HealthBoard,
    *,
    retry_min_s: float = 0.5,
    retry_max_s: float = 10.0,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep this node linked to the stream until cancelled, reconnecting after a backoff.

    `started()` comes after the first attempt, whether Redis answered or not, so a node starts
    (degraded) while Redis is down. Resource handling: each connection's clients are closed when
    it ends. Events go to the hub through `intake` (waiting while its gate is closed); ticks
    and notices straight to its inbox. Does not close the inbox.
    """
    hub = intake.inbox
    rng = rng or random.Random()
    backoff = Backoff(min_s=retry_min_s, max_s=max(retry_min_s, retry_max_s), factor=0.2)
    failures = 0
    started = False
    while True:
        error = ""
        recreated = False
        try:
            async with broker.client() as reader, broker.client() as writer:
                await _synchronise(broker, reader, writer, intake)
                if failures:
                    log.info("Broker reachable again", url=broker.url, after_attempts=failures)
                    _notify(hub, _recovered_notice(broker.url, failures))
                failures = 0
                health.broker_connected = True
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_write, broker, writer)
                    nursery.start_soon(_tail, broker, reader, writer, intake, health)
        except* _StreamRecreated:
            recreated = True
        except* LINK_ERRORS as group:
            error = describe_errors(group)
        if recreated and not error:
            log.warning("The stream was recreated: following it anew", url=broker.url)
            continue
        health.broker_connected = False
        delay_s = min(retry_max_s, backoff.delay_s(failures, rng))
        failures += 1
        log.warning(
            "Broker unreachable", url=broker.url, error=error, attempt=failures, retry_in_s=delay_s
        )
        _notify(hub, _error_notice(broker.url, error, failures, delay_s))
        if not started:
            started = True
            task_status.started()
        await trio.sleep(delay_s)


async def _synchronise(
    broker: RedisBroker,
    reader: coredis.Redis[bytes],
    writer: coredis.Redis[bytes],
    intake: HubIntake,
) -> None:
    """Find where this node stands in Redis's numbering, and catch its hub up."""
    position = broker.position
    current = await broker.number(writer, Publish(()))
    same_epoch = current.epoch == position.epoch
    lost_tail = same_epoch and current.last_seq < position.last_seq
    if lost_tail or (same_epoch and await _rewritten(broker, reader)):
        log.warning(
            "Broker lost the stream's tail: starting a new epoch",
            epoch=current.epoch,
            redis_last_seq=current.last_seq,
            node_last_seq=position.last_seq,
            rewritten=not lost_tail,
        )
        await writer.eval(
            NEW_EPOCH,
            keys=[broker.keys.events, broker.keys.meta],
            args=[current.epoch, new_epoch()],
        )
        current = await broker.number(writer, Publish(()))
    if current.epoch == position.epoch:
        return  # tailing goes on from position.last_seq
    newest: Sequence[Any] = ()
    if broker.history_size:
        newest = await reader.xrevrange(broker.keys.events, count=broker.history_size)
    in_order = list(reversed(newest))
    history = parse_entries(in_order, current.epoch)
    after = history.first_seq - 1 if history else current.last_seq
    log.info("Following the cluster's stream", epoch=current.epoch, last_seq=current.last_seq)
    await intake.send(Deliver(current.epoch, after, history.events if history else ()))
    position.epoch = current.epoch
    if history is not None and history.complete:
        position.follow(in_order, history.last_seq)
    else:
        position.last_seq, position.last_data = (history.last_seq if history else after), None


async def _rewritten(broker: RedisBroker, reader: coredis.Redis[bytes]) -> bool:
    """Whether the stream now holds something else under this node's last seq than it read.

    False when there is nothing to compare (this node read nothing yet, or the entry was
    trimmed away by `MAXLEN`): only a proven difference starts a new epoch.
    """
    position = broker.position
    if position.last_data is None or position.last_seq == 0:
        return False
    seq = str(position.last_seq)
    entries = await reader.xrange(broker.keys.events, start=seq, end=seq)
    if not entries:
        return False
    return entries[0].field_values.get(b"d") != position.last_data


async def _tail(
    broker: RedisBroker,
    reader: coredis.Redis[bytes],
    writer: coredis.Redis[bytes],
    intake: HubIntake,
    health: HealthBoard,
) -> None:
    """Read the stream from this node's position into its hub, batch after batch, each read
    once this node's intake gate is open."""
    position = broker.position
    key = broker.keys.events
    hub = intake.inbox
    while True:
        await _wait_for_room(intake, health)
        reply = await reader.xread(
            {key: f"{position.last_seq}-0"}, count=READ_COUNT, block=BLOCK_MS
        )
        entries = (reply or {}).get(key.encode(), ())
        if not entries:
            await _check_epoch(broker, writer)
            # nothing new: the hub's clock still ticks (joins waiting to catch up time out)
            await hub.send(Deliver(position.epoch or "", position.last_seq, ()))
            continue
        epoch = position.epoch or ""
        batch = parse_entries(entries, epoch)
        if batch is not None:
            await hub.send(Deliver(epoch, batch.first_seq - 1, batch.events))
            if batch.complete:
                position.follow(entries, batch.last_seq)
            else:
                position.last_seq, position.last_data = batch.last_seq, None
        if batch is None or not batch.complete:  # another epoch's entries: a recreated stream
            raise _StreamRecreated()


async def _wait_for_room(intake: HubIntake, health: HealthBoard) -> None:
    """Wait until this node's hub takes events again; while it does not, `/health` and the log
    say that the link holds back."""
    reason = intake.closed_because()
    if reason is None:
        return
    log.info("Reading the stream held back: this node's hub takes no events", reason=reason)
    started = trio.current_time()
    health.broker_held_back = True
    try:
        await intake.wait_open()
    finally:
        health.broker_held_back = False
    log.info("Reading the stream again", held_back_s=round(trio.current_time() - started, 3))


async def _check_epoch(broker: RedisBroker, writer: coredis.Redis[bytes]) -> None:
    """After a quiet read: a Redis that lost the stream, and numbers anew, ends this link."""
    current = await broker.number(writer, Publish(()))
    position = broker.position
    if current.epoch != position.epoch or current.last_seq < position.last_seq:
        raise _StreamRecreated()


async def _write(broker: RedisBroker, writer: coredis.Redis[bytes]) -> None:
    """Number each queued publish in Redis, in order, and answer its publisher."""
    dropped = 0
    while True:
        publish, deadline = await broker.next_publish()
        if publish.withdrawn():
            log.info("Publish withdrawn by its publisher", events=len(publish.events))
            continue
        if trio.current_time() > deadline:
            dropped += len(publish.events)
            _close_reply(publish)
            log.warning("Publish expired while the broker was unreachable", dropped=dropped)
            continue
        try:
            numbered = await broker.number(writer, publish)
        except ResponseError as exc:
            if "NOTLEADER" not in str(exc):
                raise
            log.warning("Events of a former poller leader dropped", count=len(publish.events))
            _close_reply(publish)
            continue
        except BaseException:
            _refuse(publish, "broker connection lost")  # it may or may not be in the stream
            raise
        if publish.reply is not None:
            with contextlib.suppress(*UNDELIVERABLE):
                publish.reply.send_nowait(numbered.seqs)


class _StreamRecreated(RedisError):
    """Redis answers with another epoch, or a shorter numbering: synchronise again."""

    def __init__(self) -> None:
        super().__init__("the stream was recreated (Redis lost its data)")


def _refuse(publish: Publish, why: str) -> None:
    """Tell `publish`'s publisher it was not published, and log it: at `info` when the
    publisher is told (the API answers 503), at `warning` when nobody else will know (the
    poller's and the heartbeat's events have no publisher waiting)."""
    if publish.reply is not None:
        log.info("Publish refused by the broker link", why=why, count=len(publish.events))
    elif publish.events:
        log.warning("Events not published", why=why, count=len(publish.events))
    _close_reply(publish)


def _close_reply(publish: Publish) -> None:
    """Close the publisher's reply channel, if it has one: its publish was not numbered."""
    if publish.reply is not None:
        publish.reply.close()


def _payload(event: Event) -> bytes:
    fields = {"type": event.type, "timestamp": event.timestamp, "data": event.data}
    try:
        return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return event.model_dump_json(exclude={"seq"}).encode()


@dataclass(frozen=True)
class Entries:
    """Stream entries read as events: the seqs they span, the events, and whether all of them
    belonged to the epoch asked for (an entry of another one ends the batch)."""

    first_seq: int
    last_seq: int
    events: tuple[tuple[int, Event], ...]
    complete: bool


def parse_entries(entries: Sequence[Any], epoch: str) -> Entries | None:
    """The `(seq, event)` pairs of stream entries of `epoch`; None when the first is not.

    An entry that is not one of Sigma's (another writer on the same keys) is skipped with a
    warning, so it costs its seq and nothing else.
    """
    events: list[tuple[int, Event]] = []
    seqs: list[int] = []
    for entry in entries:
        fields = entry.field_values
        if fields.get(b"e", b"").decode(errors="replace") != epoch:
            break
        try:
            seq = int(entry.identifier.split(b"-", 1)[0])
        except ValueError:
            break  # not an id Sigma writes: this is not our numbering
        seqs.append(seq)
        event = _event_of(fields.get(b"d"))
        if event is None:
            log.warning(
                "Malformed stream entry skipped", id=entry.identifier.decode(errors="replace")
            )
            continue
        events.append((seq, event))
    if not seqs:
        return None
    return Entries(seqs[0], seqs[-1], tuple(events), complete=len(seqs) == len(entries))


def _event_of(payload: bytes | None) -> Event | None:
    """The event an entry's `d` field holds (checked cheaply: this runs for every event on
    every node), or None when it is not one."""
    try:
        raw = orjson.loads(payload or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    event_type, timestamp, data = raw.get("type"), raw.get("timestamp"), raw.get("data")
    if event_type not in KNOWN_EVENT_TYPES or not isinstance(timestamp, str):
        return None
    if not isinstance(data, dict):
        return None
    return Event.model_construct(type=event_type, timestamp=timestamp, data=data)


def _strings(reply: Any) -> tuple[str, str, str, str]:
    epoch, first, count, last = (
        item.decode() if isinstance(item, bytes) else str(item) for item in reply
    )
    return epoch, first, count, last


def describe_errors(group: BaseExceptionGroup[Exception]) -> str:
    """One line naming each distinct error in `group` (however nested)."""
    described = {f"{type(e).__name__}: {e}" for e in leaves(group)}
    return "; ".join(sorted(described)) or "unknown error"


def _notify(hub: trio.MemorySendChannel[HubMessage], event: Event) -> None:
    with contextlib.suppress(*UNDELIVERABLE):  # a full inbox: the log line says it too
        hub.send_nowait(Notice(event))


def _error_notice(url: str, error: str, attempt: int, retry_in_s: float) -> Event:
    return make_event(
        "connection_error",
        {
            "broker": url,
            "error": error,
            "attempt": attempt,
            "retry_in_s": round(retry_in_s, 3),
        },
    )


def _recovered_notice(url: str, attempts: int) -> Event:
    return make_event(
        "notification",
        {
            "kind": "broker_recovered",
            "broker": url,
            "after_attempts": attempts,
            "message": f"The broker answers again after {attempts} failed attempt(s).",
        },
    )
