"""The per-client queue: bounds, kinds, slow-client policies, batching and handing over.

The rest of a frame the socket took only in part is the connection's, not the queue's: see
tests/gateway/test_sender.py for that, on a real socket.
"""

from __future__ import annotations

import pytest

from sigma.hub.frames import Frame
from sigma.hub.outbox import CloseReason, Outbox, OutboxClosed, SlowConsumer


def frame(n: int, key: str | None = None) -> Frame:
    return Frame(
        data=str(n).encode(),
        event_type="system_status" if key else "notification",
        snapshot_key=key,
        droppable=True,
    )


PING = Frame(b"ping", "ping")
PONG = Frame(b"pong", "pong")
REPLY = Frame(b"reply", "pong")


def data(batch: list[Frame]) -> list[bytes]:
    return [f.data for f in batch]


class Wakes:
    """Stands in for the session: counts how often the outbox asks for a sender."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def attached(outbox: Outbox, writer: object = None) -> tuple[Outbox, Wakes]:
    wakes = Wakes()
    outbox.attach(wakes, writer)  # type: ignore[arg-type]
    return outbox, wakes


def recording(capacity: int = 8, taken: int | None = None) -> tuple[Outbox, Wakes, list[bytes]]:
    """An outbox whose direct writer records each write and takes `taken` bytes (all: None)."""
    written: list[bytes] = []

    def write(chunk: bytes, size: int) -> int:
        assert size == len(chunk)
        written.append(chunk)
        return len(chunk) if taken is None else taken

    outbox, wakes = attached(Outbox(capacity), write)
    return outbox, wakes, written


def test_take_batch_takes_everything_queued_at_once() -> None:
    outbox = Outbox(capacity=8)
    for n in range(3):
        outbox.put(frame(n))
    assert data(outbox.take_batch()) == [b"0", b"1", b"2"]
    assert len(outbox) == 0
    assert outbox.high_water == 3
    assert outbox.take_batch() == []


def test_disconnect_policy_refuses_when_full() -> None:
    outbox = Outbox(capacity=2)
    outbox.put(frame(1))
    outbox.put(frame(2))
    with pytest.raises(SlowConsumer):
        outbox.put(frame(3))
    assert len(outbox) == 2


def test_drop_oldest_keeps_newest_and_counts() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    for n in range(5):
        outbox.put(frame(n))
    assert data(outbox.take_batch()) == [b"3", b"4"]
    assert outbox.take_dropped() == 3
    assert outbox.take_dropped() == 0


def test_drop_oldest_drops_events_never_replies_or_pings() -> None:
    outbox = Outbox(capacity=3, policy="drop_oldest")
    outbox.put(PING, "control")
    outbox.put(frame(1))
    outbox.put(REPLY, "reply")
    outbox.put(frame(2))  # full: drops event 1, the oldest event
    outbox.put(frame(3))  # drops event 2
    assert data(outbox.take_batch()) == [b"ping", b"reply", b"3"]
    assert outbox.take_dropped() == 2


def test_drop_oldest_cuts_off_when_only_replies_are_queued() -> None:
    outbox = Outbox(capacity=2, policy="drop_oldest")
    outbox.put(REPLY, "reply")
    outbox.put(PING, "control")
    with pytest.raises(SlowConsumer):
        outbox.put(frame(1))
    assert len(outbox) == 2


def test_each_drop_is_reported_with_how_many_events_went() -> None:
    reported: list[int] = []
    oldest = Outbox(capacity=2, policy="drop_oldest", on_drop=reported.append)
    for n in range(4):
        oldest.put(frame(n))
    conflating = Outbox(capacity=3, policy="conflate", on_drop=reported.append)
    for n in range(3):
        conflating.put(frame(n, key="system_status"))
    conflating.put(frame(3, key="system_status"))  # full: the two older snapshots go
    assert reported == [1, 1, 2]
    assert oldest.dropped == 2 and conflating.dropped == 2


def test_conflate_keeps_the_newest_snapshot_per_key() -> None:
    outbox = Outbox(capacity=3, policy="conflate")
    outbox.put(frame(1, key="system_status"))
    outbox.put(frame(2))
    outbox.put(frame(3, key="system_status"))
    outbox.put(frame(4, key="agent_status:a"))
    assert data(outbox.take_batch()) == [b"2", b"3", b"4"]
    assert outbox.take_dropped() == 1


def test_conflate_keeps_control_frames_first() -> None:
    outbox = Outbox(capacity=3, policy="conflate")
    outbox.put(frame(1, key="system_status"))
    outbox.put(PING, "control")
    outbox.put(frame(2, key="system_status"))
    outbox.put(frame(3, key="system_status"))  # full: snapshot 2 supersedes snapshot 1
    assert data(outbox.take_batch()) == [b"ping", b"2", b"3"]


def test_conflate_cuts_off_when_nothing_is_superseded() -> None:
    outbox = Outbox(capacity=2, policy="conflate")
    outbox.put(frame(1))
    outbox.put(frame(2))
    with pytest.raises(SlowConsumer):
        outbox.put(frame(3))


def test_close_discards_frames_asks_for_the_sender_and_wins_once() -> None:
    closes: list[CloseReason] = []
    outbox, wakes = attached(Outbox(capacity=2, on_close=closes.append))
    outbox.put(frame(1))
    outbox.close(4008, "slow consumer")
    outbox.close(1000, "ignored: first close wins")
    assert outbox.close_reason == CloseReason(4008, "slow consumer")
    assert closes == [CloseReason(4008, "slow consumer")]  # told once, on the first close
    assert wakes.count == 1  # a sender must write the close frame
    assert outbox.take_batch() == []
    for kind in ("event", "reply", "control"):
        with pytest.raises(OutboxClosed) as raised:
            outbox.put(frame(2), kind)  # type: ignore[arg-type]
        assert raised.value.reason.code == 4008


def test_replies_and_control_frames_may_exceed_capacity() -> None:
    outbox = Outbox(capacity=1)
    outbox.put(frame(1))
    outbox.put(frame(2), "reply")
    outbox.put(PING, "control")
    assert len(outbox) == 3


def test_control_frames_go_ahead_of_waiting_events_in_their_own_order() -> None:
    outbox = Outbox(capacity=8)
    outbox.put(frame(1))
    outbox.put(REPLY, "reply")
    outbox.put(PING, "control")
    outbox.put(PONG, "control")
    outbox.put(frame(2))
    assert data(outbox.take_batch()) == [b"ping", b"pong", b"1", b"reply", b"2"]
    outbox.put(frame(3))
    outbox.put(PING, "control")  # the count of leading control frames starts again
    assert data(outbox.take_batch()) == [b"ping", b"3"]


def test_put_says_once_that_a_flush_is_due() -> None:
    outbox = Outbox(capacity=8)
    assert outbox.put(frame(1)) is True
    assert outbox.put(frame(2)) is False  # already listed: one flush for both
    outbox.flush()
    assert outbox.put(frame(3)) is True


def test_flush_writes_straight_to_an_idle_client_in_one_write_and_wakes_nobody() -> None:
    outbox, wakes, written = recording()
    outbox.put(frame(1))
    outbox.put(frame(2))
    outbox.flush()
    assert written == [b"12"] and wakes.count == 0 and len(outbox) == 0


def test_a_partial_direct_write_leaves_the_rest_to_the_writer_and_starts_the_sender() -> None:
    outbox, wakes, written = recording(taken=1)
    outbox.put(frame(234))
    outbox.flush()
    # The writer keeps "34" (it writes it before anything else); the queue holds nothing.
    assert written == [b"234"] and len(outbox) == 0
    assert wakes.count == 1 and outbox.sending


def test_flush_starts_the_sender_when_the_socket_takes_nothing() -> None:
    outbox, wakes, _ = recording(taken=0)
    outbox.put(frame(7))
    outbox.flush()
    assert wakes.count == 1 and outbox.sending
    assert data(outbox.take_batch()) == [b"7"]


def test_nothing_is_written_directly_while_the_sender_runs() -> None:
    outbox, wakes, written = recording(taken=0)
    outbox.put(frame(1))
    outbox.flush()  # the sender is started
    outbox.put(frame(2))
    outbox.flush()
    assert written == [b"1"] and wakes.count == 1  # one sender, and the queue waits for it
    assert data(outbox.take_batch()) == [b"1", b"2"]
    assert outbox.take_batch() == [] and not outbox.sending  # the sender stops there
    outbox.put(frame(3))
    outbox.flush()
    assert written == [b"1", b"3"]


def test_dropped_events_leave_the_flush_to_the_sender_which_tells_the_client() -> None:
    outbox, wakes, written = recording(capacity=1)
    outbox.policy = "drop_oldest"
    outbox.put(frame(1))
    outbox.put(frame(2))  # drops 1
    outbox.flush()
    assert written == [] and wakes.count == 1  # the missed-events notice goes first
    assert data(outbox.take_batch()) == [b"2"] and outbox.take_dropped() == 1


def test_an_unattached_outbox_only_queues() -> None:
    outbox = Outbox(capacity=8)
    outbox.put(frame(1))
    outbox.flush()
    assert len(outbox) == 1 and not outbox.sending


def alone(outbox: Outbox, n: int) -> bool:
    """`put_alone` of event `n`, its size measured as the hub does."""
    event = frame(n)
    return outbox.put_alone(event, len(event.data))


def test_an_event_alone_goes_straight_to_an_idle_client_without_being_queued() -> None:
    outbox, wakes, written = recording()
    assert alone(outbox, 1) and alone(outbox, 2)
    assert written == [b"1", b"2"] and wakes.count == 0 and len(outbox) == 0


def test_an_event_alone_the_socket_does_not_take_is_the_senders() -> None:
    outbox, wakes, written = recording(taken=1)
    assert alone(outbox, 234)  # the writer keeps "34"; nothing is queued
    assert written == [b"234"] and len(outbox) == 0 and wakes.count == 1 and outbox.sending
    outbox, wakes, _ = recording(taken=0)
    assert alone(outbox, 7)  # nothing went: the frame waits for the sender
    assert wakes.count == 1 and data(outbox.take_batch()) == [b"7"]


def test_an_event_alone_is_left_to_put_and_flush_unless_the_client_is_idle() -> None:
    queued, _, queued_written = recording()
    queued.put(frame(1))  # not flushed yet: the event must not overtake it
    running, _, running_written = recording(taken=0)
    running.put(frame(1))
    running.flush()  # the sender runs
    dropping, _, _ = recording(capacity=1)
    dropping.policy = "drop_oldest"
    dropping.put(frame(1))
    dropping.put(frame(2))  # a drop to tell of first
    closed, _, closed_written = recording()
    closed.close(1000, "bye")
    unattached = Outbox(capacity=8)
    for outbox in (queued, running, dropping, closed, unattached):
        before = len(outbox)
        assert not alone(outbox, 9) and len(outbox) == before  # nothing done
    assert queued_written == [] and running_written == [b"1"] and closed_written == []


def test_an_outbox_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError):
        Outbox(capacity=0)
