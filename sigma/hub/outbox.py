"""The bounded queue between the hub and one client's sender.

A trio memory channel cannot drop its oldest item, replace a stale snapshot, or hand its reader
everything queued in one call, and it costs a scheduler round trip per item. `Outbox` is the
channel-shaped object that can. The hub `offer()`s each event (never awaiting a client) and,
once per inbox message, `flush()`es every outbox it touched: when the client's sender is idle
and its socket takes the bytes at once, the flush writes them itself through the session's
direct writer, with no task switch at all; otherwise it wakes the sender, which awaits
`receive_batch()` and writes every queued frame in one go. Replies that do not come from the hub
use `send_nowait()` / `send_beyond_capacity()`, which wake the sender at once.

Policies when the queue is full:
- `disconnect`: `offer` raises `SlowConsumer`; the hub closes the client with 4008 when it lags
  far behind the rest, or, when the whole herd lags, queues the frame past the bound with
  `offer_beyond_capacity` and stops taking new events (`sigma.hub.overload`).
- `drop_oldest`: the oldest queued event is dropped and counted; the sender tells the client how
  many it missed before its next frames. Replies, pings and the rest of a frame already begun
  are never dropped.
- `conflate`: queued snapshots (`system_status`, `storage_update`, `agent_status`) that a newer
  snapshot of the same key supersedes are removed; if that frees nothing the client is treated
  as under `disconnect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import trio

from sigma.hub.frames import Frame

SlowClientPolicy = Literal["disconnect", "drop_oldest", "conflate"]
SNAPSHOT_TYPES = frozenset({"system_status", "storage_update", "agent_status"})
PARTIAL_FRAME = "partial"
"""The event type of the unwritten rest of a frame: it must go out first and is never dropped."""
DirectWriter = Callable[[bytes], int]
"""Writes what the socket takes now without waiting; returns how many bytes (0: none)."""


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why an outbox was closed: the WebSocket close code and reason to send."""

    code: int
    reason: str


class SlowConsumer(trio.WouldBlock):
    """The client's queue is full and the policy is to cut it off."""


class OutboxClosed(Exception):
    """The outbox was closed; `reason` says with which close code."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"{reason.code} {reason.reason}")
        self.reason = reason


class Outbox:
    """A bounded queue of frames with one producer side (the hub) and one consumer (a sender)."""

    __slots__ = (
        "_backlog_probe",
        "_close_reason",
        "_direct",
        "_flush_pending",
        "_frames",
        "_in_flight",
        "_on_close",
        "_on_drop",
        "_partial_frames",
        "_partial_head",
        "_receiver",
        "capacity",
        "dropped",
        "high_water",
        "policy",
    )

    def __init__(
        self,
        capacity: int,
        policy: SlowClientPolicy = "disconnect",
        *,
        on_close: Callable[[CloseReason], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        """`on_close` is called once, when the outbox closes; `on_drop` with the number of
        events each time the policy drops some to make room."""
        self.capacity = capacity
        self.policy = policy
        self.dropped = 0
        """Events dropped since the sender last took a batch (`drop_oldest`, `conflate`)."""
        self.high_water = 0
        self._frames: list[Frame] = []
        self._in_flight = 0
        """Frames of the last batch the sender took, until it asks for the next one."""
        self._backlog_probe: Callable[[], int] | None = None
        self._receiver: trio.lowlevel.Task | None = None
        """The sender's task while it waits in `receive_batch`."""
        self._on_close = on_close
        self._on_drop = on_drop
        self._close_reason: CloseReason | None = None
        self._direct: DirectWriter | None = None
        self._flush_pending = False
        self._partial_head = False
        self._partial_frames = 0
        """About how many frames the partial head holds the rest of (for `lag`)."""

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def lag(self) -> int:
        """Frames the client has not been handed yet: queued, plus the batch its sender took
        and is still writing (the overload rule's measure; a sender that has just emptied
        the queue into a slow socket has not caught up). The unwritten rest of a frame run
        counts as the frames it holds the rest of."""
        extra = self._partial_frames - 1 if self._partial_head else 0
        return len(self._frames) + self._in_flight + extra

    def attach_backlog_probe(self, probe: Callable[[], int]) -> None:
        """Let `lag_with_socket` add what the socket's kernel buffer still holds, in bytes."""
        self._backlog_probe = probe

    def lag_with_socket(self, frame_bytes: int) -> float:
        """`lag` plus the socket's unsent bytes counted as frames of `frame_bytes` each.

        One system call: for the hub's overload decisions, not for every event.
        """
        probe = self._backlog_probe
        if probe is None:
            return float(self.lag)
        return self.lag + probe() / max(1, frame_bytes)

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the outbox was closed, or None while it is open."""
        return self._close_reason

    def send_nowait(self, frame: Frame) -> None:
        """Queue a frame without waiting; apply the slow-client policy when full.

        Raises `SlowConsumer` when the client must be cut off, `OutboxClosed` once closed.
        """
        self._enqueue(frame)
        self._wake_receiver()

    def offer(self, frame: Frame, flushes: list[Outbox]) -> int:
        """The hub's `send_nowait`: queue the frame, and leave waking the sender to `flush()`.

        The outbox puts itself on `flushes` (once) when its sender is waiting, so that the hub
        can flush every touched client after a whole batch of events, not after each one.
        Returns the client's `lag` afterwards (what the hub's overload rule counts).
        """
        self._enqueue(frame)
        if self._receiver is not None and not self._flush_pending:
            self._flush_pending = True
            flushes.append(self)
        return self.lag

    def offer_beyond_capacity(self, frame: Frame, flushes: list[Outbox]) -> int:
        """`offer` past the bound: the hub keeps a full client whose lag is the herd's.

        Raises `OutboxClosed` once closed; returns the `lag` afterwards.
        """
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        self._frames.append(frame)
        if len(self._frames) > self.high_water:
            self.high_water = len(self._frames)
        if self._receiver is not None and not self._flush_pending:
            self._flush_pending = True
            flushes.append(self)
        return self.lag

    def deliver_now(self, frame: Frame, flushes: list[Outbox]) -> int:
        """`offer` and `flush` in one step, for an event with nothing to be coalesced with.

        An idle client whose socket takes the whole frame gets it at once, and nothing is
        queued; otherwise the frame is offered as usual. Returns the `lag` afterwards.
        """
        if (
            self._direct is not None
            and self._receiver is not None
            and not self._frames
            and not self.dropped
            and self._close_reason is None
        ):
            if self._write_directly(frame.data):
                return 0
            if self._partial_head:
                self._wake_receiver()
                return self.lag
        return self.offer(frame, flushes)

    def _enqueue(self, frame: Frame) -> None:
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        frames = self._frames
        if len(frames) >= self.capacity and not self._make_room():
            raise SlowConsumer
        frames.append(frame)
        if len(frames) > self.high_water:
            self.high_water = len(frames)

    def attach_direct_writer(self, writer: DirectWriter) -> None:
        """Let `flush()` write to the socket itself while the sender is idle."""
        self._direct = writer

    def flush(self) -> None:
        """Hand what is queued to the client: written at once if the socket takes it all and
        the sender is idle (no task switch at all), otherwise by waking the sender."""
        self._flush_pending = False
        frames = self._frames
        if not frames or self._close_reason is not None or self._receiver is None:
            return
        if self._direct is not None and not self.dropped and not self._partial_head:
            data = frames[0].data if len(frames) == 1 else b"".join(f.data for f in frames)
            if self._write_directly(data):
                return
        self._wake_receiver()

    def _write_directly(self, data: bytes) -> bool:
        """Give `data`, everything queued (or a frame not yet queued), to the direct writer.

        True when it all went out: the queue is then empty. When only some did, the rest
        replaces the queue as its partial head; when none did, the queue is left as it was.
        """
        assert self._direct is not None
        written = self._direct(data)
        if written == len(data):
            self._frames.clear()
            return True
        if written:
            frames = max(1, len(self._frames))
            self._partial_frames = max(1, round(frames * (len(data) - written) / len(data)))
            self._frames[:] = [Frame(data[written:], PARTIAL_FRAME)]
            self._partial_head = True
        return False

    def send_first(self, frame: Frame) -> None:
        """Queue a control frame (a ping) ahead of everything but the rest of a begun frame.

        So that a client whose queue is full still gets it without waiting for the queue.
        Raises `OutboxClosed` once closed.
        """
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        self._frames.insert(1 if self._partial_head else 0, frame)
        self._wake_receiver()

    def send_beyond_capacity(self, frame: Frame) -> None:
        """Queue a frame the client must get whatever the bound (welcome, replay, replies)."""
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        self._frames.append(frame)
        self._wake_receiver()

    def _make_room(self) -> bool:
        if self.policy == "drop_oldest":
            removed = self._drop_oldest_event()
        elif self.policy == "conflate":
            removed = self._conflate()
        else:
            return False
        if removed:
            self.dropped += removed
            if self._on_drop is not None:
                self._on_drop(removed)
        return removed > 0

    def _drop_oldest_event(self) -> int:
        frames = self._frames
        for index, frame in enumerate(frames):
            if frame.droppable:
                del frames[index]
                return 1
        return 0

    def _conflate(self) -> int:
        newest_seen: set[str] = set()
        kept: list[Frame] = []
        for frame in reversed(self._frames):
            key = frame.snapshot_key
            if key is not None:
                if key in newest_seen:
                    continue
                newest_seen.add(key)
            kept.append(frame)
        kept.reverse()
        removed = len(self._frames) - len(kept)
        self._frames[:] = kept
        return removed

    async def receive_batch(self) -> list[Frame]:
        """Wait for at least one frame, then take every queued frame at once.

        Always passes one scheduling point: parking when the queue is empty, or yielding once
        when it is not (which also lets more frames gather into the batch).
        Raises `OutboxClosed` once closed, after handing over the rest of a frame already begun
        (the only thing a close keeps: the connection's framing depends on it).
        """
        self._in_flight = 0  # the sender is done with its last batch
        if self._frames or self._close_reason is not None:
            await trio.lowlevel.checkpoint()
        while not self._frames and self._close_reason is None:
            await self._wait()
        if not self._frames:
            assert self._close_reason is not None
            raise OutboxClosed(self._close_reason)
        self._in_flight = self.lag
        batch, self._frames = self._frames, []
        self._partial_head = False
        return batch

    async def _wait(self) -> None:
        if self._receiver is not None:
            raise trio.BusyResourceError("another task is already receiving from this outbox")
        self._receiver = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_receiver(self) -> None:
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)

    def take_dropped(self) -> int:
        """Return and reset the count of events dropped since the last call."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def close(self, code: int, reason: str) -> None:
        """Close the outbox; the first close wins. Wakes the sender and calls `on_close`."""
        if self._close_reason is not None:
            return
        self._close_reason = CloseReason(code, reason)
        del self._frames[1 if self._partial_head else 0 :]
        self._wake_receiver()
        if self._on_close is not None:
            self._on_close(self._close_reason)
