"""The per-client queue: bounds, slow-client policies and batching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from sigma.hub.frames import Frame
from sigma.hub.outbox import CloseReason, Outbox, OutboxClosed, SlowConsumer


def frame(n: int, key: str | None = None) -> Frame:
    return Frame(
        data=str(n).encode(),
        event_type="system_status" if key else "notification",
        snapshot_key=key,
        droppable=True,
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


async def test_drop_oldest_drops_events_never_replies_or_pings() -> None:
    outbox = Outbox(capacity=3, policy="drop_oldest")
    outbox.send_nowait(Frame(b"ping", "ping"))
    outbox.send_nowait(frame(1))
    outbox.send_nowait(Frame(b"pong", "pong"))
    outbox.send_nowait(frame(2))  # full: drops event 1, the oldest event
    outbox.send_nowait(frame(3))  # drops event 2
    assert [f.data for f in await outbox.receive_batch()] == [b"ping", b"pong", b"3"]
    assert outbox.take_dropped() == 2


def test_drop_oldest_cuts_off_when_only_replies_are_queued() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    outbox.send_nowait(Frame(b"pong", "pong"))
    outbox.send_nowait(Frame(b"ping", "ping"))
    with pytest.raises(SlowConsumer):
        outbox.send_nowait(frame(1))
    assert len(outbox) == 2


def test_each_drop_is_reported_with_how_many_events_went() -> None:
    reported: list[int] = []
    oldest = Outbox(capacity=2, policy="drop_oldest", on_drop=reported.append)
    for n in range(4):
        oldest.send_nowait(frame(n))
    conflating = Outbox(capacity=3, policy="conflate", on_drop=reported.append)
    for n in range(3):
        conflating.send_nowait(frame(n, key="system_status"))
    conflating.send_nowait(frame(3, key="system_status"))  # full: the two older snapshots go
    assert reported == [1, 1, 2]
    assert oldest.dropped == 2 and conflating.dropped == 2


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
    closes: list[CloseReason] = []
    outbox = Outbox(capacity=2, on_close=closes.append)
    outbox.send_nowait(frame(1))
    outbox.close(4008, "slow consumer")
    outbox.close(1000, "ignored: first close wins")
    with pytest.raises(OutboxClosed) as raised:
        await outbox.receive_batch()
    assert raised.value.reason.code == 4008
    assert closes == [CloseReason(4008, "slow consumer")]  # told once, on the first close
    with pytest.raises(OutboxClosed):
        outbox.send_nowait(frame(2))


def test_replies_may_exceed_capacity() -> None:
    outbox = Outbox(capacity=1)
    outbox.send_nowait(frame(1))
    outbox.send_beyond_capacity(frame(2))
    assert len(outbox) == 2


async def parked_sender(outbox: Outbox, got: list[list[Frame]]) -> None:
    got.append(await outbox.receive_batch())


@asynccontextmanager
async def sender_parked_on(outbox: Outbox) -> AsyncIterator[list[list[Frame]]]:
    """A sender task waiting in `receive_batch`; yields the list its batch will be put in.

    On exit the sender takes what it was woken for, or stops waiting if it was not woken.
    """
    got: list[list[Frame]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked_sender, outbox, got)
        await trio.testing.wait_all_tasks_blocked()
        yield got
        nursery.cancel_scope.cancel()


def recording_outbox() -> tuple[Outbox, list[bytes]]:
    """An outbox whose direct writer takes every byte and records each write."""
    outbox = Outbox(capacity=8)
    written: list[bytes] = []
    outbox.attach_direct_writer(lambda data: written.append(data) or len(data))
    return outbox, written


async def test_flush_writes_straight_to_an_idle_client_and_wakes_nobody() -> None:
    outbox, written = recording_outbox()
    flushes: list[Outbox] = []
    async with sender_parked_on(outbox) as got:
        outbox.offer(frame(1), flushes)
        outbox.offer(frame(2), flushes)
        assert flushes == [outbox]  # listed once, however many frames
        for pending in flushes:
            pending.flush()
        await trio.testing.wait_all_tasks_blocked()
        assert written == [b"12"] and got == [] and len(outbox) == 0


async def test_deliver_now_writes_an_idle_clients_frame_without_queueing_it() -> None:
    outbox, written = recording_outbox()
    flushes: list[Outbox] = []
    async with sender_parked_on(outbox) as got:
        outbox.deliver_now(frame(1), flushes)
        await trio.testing.wait_all_tasks_blocked()
        assert written == [b"1"] and flushes == [] and got == [] and len(outbox) == 0
        assert outbox.high_water == 0


async def test_deliver_now_queues_the_unwritten_rest_first_and_wakes_the_sender() -> None:
    outbox = Outbox(capacity=8)
    outbox.attach_direct_writer(lambda data: 1)
    async with sender_parked_on(outbox) as got:
        flushes: list[Outbox] = []
        outbox.deliver_now(frame(234), flushes)
        outbox.send_nowait(frame(5))
    assert [f.data for f in got[0]] == [b"34", b"5"]
    assert flushes == []


async def test_deliver_now_queues_behind_what_is_already_queued() -> None:
    outbox, written = recording_outbox()
    outbox.send_nowait(frame(1))  # nobody is receiving yet
    flushes: list[Outbox] = []
    outbox.deliver_now(frame(2), flushes)
    assert written == [] and [f.data for f in await outbox.receive_batch()] == [b"1", b"2"]


async def test_partial_direct_write_leaves_the_rest_first_and_never_drops_it() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    outbox.attach_direct_writer(lambda data: 1)
    async with sender_parked_on(outbox) as got:
        flushes: list[Outbox] = []
        outbox.offer(frame(34), flushes)
        outbox.flush()
        outbox.send_nowait(frame(5))
        outbox.send_nowait(frame(6))  # full: drops 5, never the unwritten "4"
    assert [f.data for f in got[0]] == [b"4", b"6"]
    assert outbox.take_dropped() == 1


async def test_flush_wakes_the_sender_when_the_socket_takes_nothing() -> None:
    outbox = Outbox(capacity=8)
    outbox.attach_direct_writer(lambda data: 0)
    async with sender_parked_on(outbox) as got:
        flushes: list[Outbox] = []
        outbox.offer(frame(7), flushes)
        outbox.flush()
    assert [f.data for f in got[0]] == [b"7"]


async def test_only_one_task_may_wait_for_batches() -> None:
    outbox = Outbox(capacity=2)
    async with sender_parked_on(outbox) as got:
        with pytest.raises(trio.BusyResourceError):
            await outbox.receive_batch()
        outbox.send_nowait(frame(1))
    assert [f.data for f in got[0]] == [b"1"]


async def test_a_cancelled_wait_leaves_the_outbox_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(capacity=2)
    with trio.move_on_after(1):
        await outbox.receive_batch()
    outbox.send_nowait(frame(2))
    assert [f.data for f in await outbox.receive_batch()] == [b"2"]


async def test_a_control_frame_goes_first_but_after_the_rest_of_a_begun_frame() -> None:
    outbox = Outbox(capacity=8)
    outbox.send_nowait(frame(1))
    outbox.send_first(Frame(b"ping", "ping"))
    assert [f.data for f in await outbox.receive_batch()] == [b"ping", b"1"]
    outbox.attach_direct_writer(lambda data: 1)
    async with sender_parked_on(outbox) as got:
        outbox.deliver_now(frame(23), [])  # the socket took "2": "3" is owed
        outbox.send_first(Frame(b"ping", "ping"))
    assert [f.data for f in got[0]] == [b"3", b"ping"]
