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
from collections.abc import Sequence
from typing import Any

import coredis
import structlog
import trio
from coredis.exceptions import RedisError, ResponseError

from sigma.backoff import Backoff
from sigma.broker.entries import parse_entries
from sigma.broker.node import (
    BLOCK_MS,
    RedisBroker,
    close_reply,
    new_epoch,
    refuse_publish,
)
from sigma.broker.scripts import NEW_EPOCH
from sigma.errors import leaves
from sigma.health import HealthBoard
from sigma.hub.intake import HubIntake
from sigma.hub.messages import UNDELIVERABLE, Deliver, HubMessage, Notice, Publish
from sigma.protocol.server_messages import Event, make_event

log = structlog.get_logger("sigma.broker")

READ_COUNT = 1000
LINK_ERRORS = (RedisError, OSError, trio.TooSlowError)
"""What ends one connection of the link: Redis gone, refused, or not answering in time."""


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
    it ends. Each read of the stream waits until `intake`'s gate is open; what is read, the
    ticks and the notices go to its inbox. Does not close the inbox.
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
    # Not through the gate: a new epoch closes every client (1012), lagging or not.
    await intake.inbox.send(Deliver(current.epoch, after, history.events if history else ()))
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
            close_reply(publish)
            log.warning("Publish expired while the broker was unreachable", dropped=dropped)
            continue
        try:
            numbered = await broker.number(writer, publish)
        except ResponseError as exc:
            if "NOTLEADER" not in str(exc):
                raise
            log.warning("Events of a former poller leader dropped", count=len(publish.events))
            close_reply(publish)
            continue
        except BaseException:
            refuse_publish(publish, "broker connection lost")  # it may or may not be in the stream
            raise
        if publish.reply is not None:
            with contextlib.suppress(*UNDELIVERABLE):
                publish.reply.send_nowait(numbered.seqs)


class _StreamRecreated(RedisError):
    """Redis answers with another epoch, or a shorter numbering: synchronise again."""

    def __init__(self) -> None:
        super().__init__("the stream was recreated (Redis lost its data)")


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
