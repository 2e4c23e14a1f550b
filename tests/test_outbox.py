"""The per-client queue: bounds, slow-client policies and batching."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sigma.actors.outbox import Frame, Outbox, OutboxClosed, SlowConsumer


def frame(n: int, key: str | None = None) -> Frame:
    return Frame(
        data=str(n).encode(),
        event_type="system_status" if key else "notification",
        snapshot_key=key,
    )


async def test_receive_batch_takes_everything_queued_at_once() -> None:
    outbox = Outbox(capacity=8)
    for n in range(3):
        outbox.send_nowait(frame(n))
    batch = await outbox.receive_batch()
    assert [f.data for f in batch] == [b"0", b"1", b"2"]
    assert len(outbox) == 0
    assert outbox.high_water == 3


async def test_receive_batch_waits_for_a_frame() -> None:
    outbox = Outbox(capacity=2)
    got: list[list[Frame]] = []

    async def receive() -> None:
        got.append(await outbox.receive_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        outbox.send_nowait(frame(1))
    assert [f.data for f in got[0]] == [b"1"]


def test_disconnect_policy_refuses_when_full() -> None:
    outbox = Outbox(capacity=2)
    outbox.send_nowait(frame(1))
    outbox.send_nowait(frame(2))
    with pytest.raises(SlowConsumer):
        outbox.send_nowait(frame(3))
    assert len(outbox) == 2


async def test_drop_oldest_keeps_newest_and_counts() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    for n in range(5):
        outbox.send_nowait(frame(n))
    assert [f.data for f in await outbox.receive_batch()] == [b"3", b"4"]
    assert outbox.take_dropped() == 3
    assert outbox.take_dropped() == 0


async def test_conflate_keeps_the_newest_snapshot_per_key() -> None:
    outbox = Outbox(capacity=3, policy="conflate")
    outbox.send_nowait(frame(1, key="system_status"))
    outbox.send_nowait(frame(2))
    outbox.send_nowait(frame(3, key="system_status"))
    outbox.send_nowait(frame(4, key="agent_status:a"))
    assert [f.data for f in await outbox.receive_batch()] == [b"2", b"3", b"4"]
    assert outbox.take_dropped() == 1


def test_conflate_cuts_off_when_nothing_is_superseded() -> None:
    outbox = Outbox(capacity=2, policy="conflate")
    outbox.send_nowait(frame(1))
    outbox.send_nowait(frame(2))
    with pytest.raises(SlowConsumer):
        outbox.send_nowait(frame(3))


async def test_close_wakes_the_receiver_and_discards_frames() -> None:
    outbox = Outbox(capacity=2)
    outbox.send_nowait(frame(1))
    outbox.close(4008, "slow consumer")
    outbox.close(1000, "ignored: first close wins")
    with pytest.raises(OutboxClosed) as raised:
        await outbox.receive_batch()
    assert raised.value.reason.code == 4008
    assert (await outbox.wait_closed()).reason == "slow consumer"
    with pytest.raises(OutboxClosed):
        outbox.send_nowait(frame(2))


def test_replies_may_exceed_capacity() -> None:
    outbox = Outbox(capacity=1)
    outbox.send_nowait(frame(1))
    outbox.send_beyond_capacity(frame(2))
    assert len(outbox) == 2
