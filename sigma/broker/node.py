"""This node in the cluster: its name, its keys, its queue of publishes, and where it is in the
numbering.

`node_id_of` gives this node's name, as `/health`, heartbeats and the welcome report it.
`RedisBroker` is what outlives the link's reconnections (`sigma.broker.stream`): the queue of
publishes the hub hands over (`submit`), the call that numbers one in Redis (`number`, the
`NUMBER` script), and the `Position` this node has read the stream up to.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import coredis
import structlog
import trio

from sigma.broker.entries import entry_payload
from sigma.broker.scripts import NUMBER, StreamKeys
from sigma.config.pipeline import BrokerConfig
from sigma.config.redaction import url_without_password
from sigma.hub.messages import Publish

log = structlog.get_logger("sigma.broker")

BLOCK_MS = 1000
"""How long one XREAD waits for new entries; after a quiet one the link checks the epoch."""
MIN_STREAM_LENGTH = 1024
"""The stream keeps at least this many entries (or `[hub] history_size`, if more), so that a
node a little behind still finds what it has not read."""
CONNECT_TIMEOUT_S = 2.0


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
            refuse_publish(publish, "the broker's queue is full")

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
            *(entry_payload(event) for event in publish.events),
        ]
        reply = await redis.eval(
            NUMBER,
            keys=[self.keys.events, self.keys.meta, self.keys.lease, idempotency_key],
            args=arguments,
        )
        epoch, first, count, last = _strings(reply)
        seqs = tuple(range(int(first), int(first) + int(count)))
        return Numbered(epoch, seqs, repeated=last == "-1", last_seq=int(last))


def refuse_publish(publish: Publish, why: str) -> None:
    """Tell `publish`'s publisher it was not published, and log it: at `info` when the
    publisher is told (the API answers 503), at `warning` when nobody else will know (the
    poller's and the heartbeat's events have no publisher waiting)."""
    if publish.reply is not None:
        log.info("Publish refused by the broker link", why=why, count=len(publish.events))
    elif publish.events:
        log.warning("Events not published", why=why, count=len(publish.events))
    close_reply(publish)


def close_reply(publish: Publish) -> None:
    """Close the publisher's reply channel, if it has one: its publish was not numbered."""
    if publish.reply is not None:
        publish.reply.close()


def _strings(reply: Any) -> tuple[str, str, str, str]:
    epoch, first, count, last = (
        item.decode() if isinstance(item, bytes) else str(item) for item in reply
    )
    return epoch, first, count, last


def node_id_of(config: BrokerConfig) -> str:
    """`[broker] node_id` when set, else `<hostname>-<pid>`: one name per running process.

    The default is stable for the life of the process and different for each of several
    `sigma serve` processes on one host (`[gateway] reuse_port`).
    """
    return config.node_id or f"{socket.gethostname()}-{os.getpid()}"
