"""What the broker link does with a publish it cannot queue: the publisher is told, and an
event with no publisher waiting (the poller's, the heartbeat's) is not dropped unlogged.
No Redis is needed: the queue is full before the link ever runs."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from sigma.broker.node import RedisBroker
from sigma.config import BrokerConfig
from sigma.hub.messages import Publish
from sigma.protocol.server_messages import make_event


def full_broker() -> RedisBroker:
    """A broker whose queue (one slot) is already taken."""
    config = BrokerConfig(kind="redis", url="redis://127.0.0.1:9", stream="unit", lease_s=1.0)
    broker = RedisBroker(config, history_size=16, queue_size=1, node_id="n")
    broker.submit(Publish((make_event("notification", {"n": 0}),)))
    return broker


async def test_an_internal_event_refused_by_a_full_queue_is_logged_as_a_warning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = full_broker()
    with capture_logs() as logs:
        broker.submit(Publish((make_event("system_status", {"cpu": 1.0}),)))
    assert logs == [
        {
            "event": "Events not published",
            "why": "the broker's queue is full",
            "count": 1,
            "log_level": "warning",
        }
    ]
    publish, _ = await broker.next_publish()  # the one queued before is still there ...
    assert publish.events[0].data == {"n": 0}
    with trio.move_on_after(1.0) as waited:  # ... alone
        await broker.next_publish()
    assert waited.cancelled_caught


async def test_a_publish_refused_by_a_full_queue_tells_its_publisher() -> None:
    broker = full_broker()
    reply_send, reply_receive = trio.open_memory_channel[tuple[int, ...]](1)
    with capture_logs() as logs:
        broker.submit(Publish((make_event("notification", {}),), reply_send))
    with pytest.raises(trio.EndOfChannel):  # the API answers 503 on this
        await reply_receive.receive()
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("Publish refused by the broker link", "info")
    ]
