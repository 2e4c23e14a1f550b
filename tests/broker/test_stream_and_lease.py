"""The numbering script and the lease against a real redis-server: fencing a former leader,
renewal by the holder only, and a Redis whose numbering went back (a lost tail) starting anew."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from coredis.exceptions import ResponseError
from helpers import RedisServer, needs_binary

from sigma.broker.entries import parse_entries
from sigma.broker.lease import Lease
from sigma.broker.node import RedisBroker
from sigma.broker.stream import _synchronise
from sigma.config import BrokerConfig
from sigma.hub.intake import HubIntake
from sigma.hub.messages import Deliver, HubMessage, Publish
from sigma.protocol.server_messages import make_event

pytestmark = needs_binary("redis-server", package="redis-server")


def broker_on(redis: RedisServer, *, history_size: int = 16) -> RedisBroker:
    config = BrokerConfig(kind="redis", url=redis.url, stream="unit", lease_s=1.0)
    return RedisBroker(config, history_size=history_size, queue_size=8, node_id="n")


def events(count: int) -> tuple[Any, ...]:
    return tuple(make_event("notification", {"n": n}) for n in range(count))


async def test_events_of_a_leader_that_lost_its_lease_never_enter_the_stream(
    redis_server: RedisServer,
) -> None:
    broker = broker_on(redis_server)
    old, new = (
        Lease(broker.keys.lease, 1.0, node_id="a"),
        Lease(broker.keys.lease, 1.0, node_id="b"),
    )
    async with broker.client() as redis:
        assert await old.acquire(redis)
        assert not await new.acquire(redis)  # held
        fenced = await broker.number(redis, Publish(events(2), fence=old.token))
        assert fenced.seqs == (1, 2)
        await redis.delete([broker.keys.lease])  # as if it expired while `old` was paused
        assert await new.acquire(redis)
        assert not await old.renew(redis)
        with pytest.raises(ResponseError, match="NOTLEADER"):
            await broker.number(redis, Publish(events(1), fence=old.token))
        assert await redis.xlen(broker.keys.events) == 2
        assert (await broker.number(redis, Publish(events(1), fence=new.token))).seqs == (3,)
        await old.release(redis)  # not its lease any more: changes nothing
        assert await redis.get(broker.keys.lease) == new.token.encode()


async def test_a_repeated_idempotency_key_answers_the_first_seqs_and_adds_nothing(
    redis_server: RedisServer,
) -> None:
    broker = broker_on(redis_server)
    async with broker.client() as redis:
        first = await broker.number(redis, Publish(events(3), idempotency_key="k"))
        again = await broker.number(redis, Publish(events(3), idempotency_key="k"))
        assert (first.seqs, again.seqs, again.repeated) == ((1, 2, 3), (1, 2, 3), True)
        assert await redis.xlen(broker.keys.events) == 3


async def test_a_redis_that_lost_the_tail_this_node_saw_gets_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    broker = broker_on(redis_server)
    send, receive = trio.open_memory_channel[HubMessage](8)
    async with broker.client() as reader, broker.client() as writer:
        await _synchronise(broker, reader, writer, HubIntake(send))
        first = receive.receive_nowait()
        assert isinstance(first, Deliver)
        await broker.number(writer, Publish(events(5)))
        broker.position.last_seq = 5  # this node delivered up to 5 ...
        await writer.hset(broker.keys.meta, {"seq": 3})  # ... and Redis came back knowing 3
        await _synchronise(broker, reader, writer, HubIntake(send))
        restarted = receive.receive_nowait()
        assert isinstance(restarted, Deliver)
        assert restarted.epoch != first.epoch and restarted.events == ()
        assert broker.position.epoch == restarted.epoch and broker.position.last_seq == 0
        assert (await broker.number(writer, Publish(events(1)))).seqs == (1,)


async def test_a_tail_rewritten_under_the_same_epoch_gets_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    """A failover to a replica that lacked the tail, after which another node numbered past
    this node's position: Redis's seq is not behind this node's, but what it holds under this
    node's last seq is not what this node delivered."""
    broker = broker_on(redis_server)
    send, receive = trio.open_memory_channel[HubMessage](8)
    async with broker.client() as reader, broker.client() as writer:
        await _synchronise(broker, reader, writer, HubIntake(send))
        first = receive.receive_nowait()
        assert isinstance(first, Deliver)
        await broker.number(writer, Publish(events(5)))
        read = await reader.xrange(broker.keys.events)
        broker.position.follow(read, 5)  # this node delivered 1..5, as its tail does
        # The replica knew only 1..3 (and so a stream whose newest id is 3-0) ...
        await writer.delete([broker.keys.events])
        for entry in read[:3]:
            await writer.xadd(broker.keys.events, entry.field_values, identifier=entry.identifier)
        await writer.hset(broker.keys.meta, {"seq": 3})
        await broker.number(writer, Publish(events(3)))  # ... and another node numbered 4..6
        await _synchronise(broker, reader, writer, HubIntake(send))
        restarted = receive.receive_nowait()
        assert isinstance(restarted, Deliver)
        assert restarted.epoch != first.epoch


async def test_a_stream_that_merely_went_on_keeps_its_epoch(redis_server: RedisServer) -> None:
    broker = broker_on(redis_server)
    send, receive = trio.open_memory_channel[HubMessage](8)
    async with broker.client() as reader, broker.client() as writer:
        await _synchronise(broker, reader, writer, HubIntake(send))
        first = receive.receive_nowait()
        await broker.number(writer, Publish(events(5)))
        broker.position.follow(await reader.xrange(broker.keys.events), 5)
        await broker.number(writer, Publish(events(2)))  # others went on while it was away
        await _synchronise(broker, reader, writer, HubIntake(send))
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()  # nothing to restart: tailing goes on from 5
        assert isinstance(first, Deliver) and broker.position.epoch == first.epoch


async def test_an_entry_that_is_not_an_event_costs_its_seq_and_nothing_else(
    redis_server: RedisServer,
) -> None:
    broker = broker_on(redis_server)
    async with broker.client() as redis:
        numbered = await broker.number(redis, Publish(events(1)))
        await redis.hincrby(broker.keys.meta, "seq", 1)  # a foreign writer takes seq 2 ...
        await redis.xadd(broker.keys.events, {"e": numbered.epoch, "d": "{no"}, identifier="2-0")
        await broker.number(redis, Publish(events(1)))  # ... and Sigma goes on with 3
        entries = await redis.xrange(broker.keys.events)
    batch = parse_entries(entries, numbered.epoch)
    assert batch is not None and batch.complete
    assert (batch.first_seq, batch.last_seq) == (1, 3)
    assert [seq for seq, _ in batch.events] == [1, 3]
    assert parse_entries(entries, "another epoch") is None
