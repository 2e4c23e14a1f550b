"""The bounded queue between the hub and one client's connection.

A trio memory channel cannot drop its oldest item, replace a stale snapshot, or hand its reader
everything queued in one call, and it costs a scheduler round trip per item. `Outbox` is the
queue that can. It has one way in, `put(frame, kind)`, where the kind says how the frame is
queued:
- `event`: a numbered event, bounded by `capacity` and subject to the slow-client policy. The
  hub puts an event to every subscriber, then `flush()`es each outbox it touched once per inbox
  message, so that a batch of events coalesces into one write;
- `reply`: a direct reply (welcome, replay, subscription and error replies), queued whatever the
  bound;
- `control`: a WebSocket control frame (ping, pong), queued ahead of every event and reply
  (after the control frames already waiting), whatever the bound.
Whoever puts then calls `flush()` (the hub once per inbox message for all it touched, a session
right after its reply). One way out, `take_batch()`, which takes everything queued at once; and
`close()`.

Handing over (`flush`): while no sender runs, the queued bytes go to the connection's direct
writer (`attach`), joined into one write, with no task switch at all. What the socket does not
take is the sender's: the outbox asks its owner to start one (`wake`), and says it runs until
`take_batch()` finds the queue empty. A writer that took part of the bytes keeps the rest and
writes it before anything else (`sigma.websocket.connection`), so the queue never holds half a
frame.

Policies when the queue is full of events:
- `disconnect`: `put` raises `SlowConsumer`; the hub closes the client with 4008 when it lags
  far behind the rest, or, when the whole herd lags, queues the event past the bound with
  `put_beyond_capacity` and stops taking new events (`sigma.hub.overload`, which reads `lag`).
- `drop_oldest`: the oldest queued event is dropped and counted; the sender tells the client how
  many it missed before its next frames. Replies and control frames are never dropped (and the
  rest of a begun frame is the connection's, out of the queue's reach).
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
FrameKind = Literal["event", "reply", "control"]
SNAPSHOT_TYPES = frozenset({"system_status", "storage_update", "agent_status"})
DirectWriter = Callable[[bytes, int], int]
"""`(data, len(data))`: writes what the socket takes now without waiting; returns how many bytes
(0: none). When it returns fewer than all, it keeps the rest and writes it before anything else.
The size comes measured: the hub measures an event's frame once for all its clients."""


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
        "_controls",
        "_direct",
        "_due",
        "_frames",
        "_in_flight",
        "_on_close",
        "_on_drop",
        "_wake",
        "capacity",
        "dropped",
        "high_water",
        "policy",
        "sending",
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
        events each time the policy drops some to make room. `capacity` is at least 1 (`put_alone`
        writes an event to an empty queue without asking whether it has room)."""
        if capacity < 1:
            raise ValueError(f"an outbox holds at least one event, not {capacity}")
        self.capacity = capacity
        self.policy = policy
        self.dropped = 0
        """Events dropped since the sender last took a batch (`drop_oldest`, `conflate`)."""
        self.high_water = 0
        self.sending = False
        """A sender runs: it takes what is queued, and nothing is written directly meanwhile."""
        self._frames: list[Frame] = []
        self._controls = 0  # how many control frames lead the queue
        self._on_close = on_close
        self._on_drop = on_drop
        self._close_reason: CloseReason | None = None
        self._direct: DirectWriter | None = None
        self._wake: Callable[[], None] | None = None
        self._in_flight = 0
        """Frames of the last batch the sender took, until it takes the next one."""
        self._backlog_probe: Callable[[], int] | None = None
        self._due = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the outbox was closed, or None while it is open."""
        return self._close_reason

    def attach(self, wake: Callable[[], None], direct: DirectWriter | None = None) -> None:
        """Connect the outbox to its client: `wake()` must start a sender (it is called only
        while none runs); `direct`, when given, writes to an idle client's socket at once."""
        self._wake = wake
        self._direct = direct

    @property
    def lag(self) -> int:
        """Frames the client has not been handed yet: queued, plus the batch its sender took
        and is still writing (the overload rule's measure: a sender that has just emptied the
        queue into a slow socket has not caught up)."""
        return len(self._frames) + self._in_flight

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

    def put_beyond_capacity(self, frame: Frame) -> bool:
        """`put` of an event past the bound: the hub keeps a full client whose lag is the
        herd's. Returns what `put` does; raises `OutboxClosed` once closed."""
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        self._frames.append(frame)
        if len(self._frames) > self.high_water:
            self.high_water = len(self._frames)
        if self._due:
            return False
        self._due = True
        return True

    def put(self, frame: Frame, kind: FrameKind = "event") -> bool:
        """Queue `frame` as `kind` (see the module docstring).

        Nothing is handed over before `flush()`; the result says whether this put made the
        outbox due for one (True once until the next flush), so the hub lists each touched
        outbox once. Raises `SlowConsumer` when the client must be cut off, `OutboxClosed` once
        closed.
        """
        if self._close_reason is not None:
            raise OutboxClosed(self._close_reason)
        frames = self._frames
        if kind == "event":
            if len(frames) >= self.capacity and not self._make_room():
                raise SlowConsumer
            frames.append(frame)
        elif kind == "reply":
            frames.append(frame)
        else:
            frames.insert(self._controls, frame)
            self._controls += 1
        if len(frames) > self.high_water:
            self.high_water = len(frames)
        if self._due:
            return False
        self._due = True
        return True

    def put_alone(self, frame: Frame, size: int) -> bool:
        """`put(frame)` then `flush()` of an event that comes alone, in one call, for a client
        that is idle (open, nothing queued, no sender running, nothing dropped to tell of):
        the frame goes to the direct writer without being queued and taken off again.

        `size` is `len(frame.data)`. Returns False, having done nothing, when the client is not
        idle that way: the caller then puts and flushes as usual. Otherwise True, whatever the
        socket took: what it did not take is the sender's, as after `flush`. The client's lag is
        then at most this one frame. (The broadcast loop's most common case, one call per
        client per event: about 3,300 fewer instructions per delivery than `put` and `flush`.)
        """
        direct = self._direct
        if direct is None or self._frames or self.sending or self.dropped:
            return False
        if self._close_reason is not None:
            return False
        written = direct(frame.data, size)
        if written != size:
            if not written:  # the socket took nothing: the frame waits for the sender
                self._frames.append(frame)
                if not self.high_water:
                    self.high_water = 1
            self._start_sender()
        return True

    def flush(self) -> None:
        """Hand what is queued to the client: written at once if no sender runs and the socket
        takes it all (no task switch at all), otherwise by starting the sender."""
        self._due = False
        frames = self._frames
        if self.sending or not frames or self._close_reason is not None:
            return
        direct = self._direct
        if direct is not None and not self.dropped:
            data = frames[0].data if len(frames) == 1 else b"".join(f.data for f in frames)
            written = direct(data, len(data))
            if written:  # all of it went, or the writer owes the rest
                frames.clear()
                self._controls = 0
                if written == len(data):
                    return
        self._start_sender()

    def _start_sender(self) -> None:
        if self._wake is not None and not self.sending:
            self.sending = True
            self._wake()

    def take_batch(self) -> list[Frame]:
        """The sender's receive: every queued frame at once, oldest first.

        An empty list means the queue is empty: the sender stops there (`sending` is cleared),
        and the next `flush()` writes directly again. Once closed it is always empty.
        """
        batch = self._frames
        self._in_flight = len(batch)
        if not batch:
            self.sending = False
            return batch
        self._frames = []
        self._controls = 0
        return batch

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
        for index in range(self._controls, len(frames)):
            if frames[index].droppable:
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

    def take_dropped(self) -> int:
        """Return and reset the count of events dropped since the last call."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def close(self, code: int, reason: str) -> None:
        """Close the outbox; the first close wins. Discards what is queued (the close frame
        supersedes it), starts the sender to write the close frame, and calls `on_close`."""
        if self._close_reason is not None:
            return
        self._close_reason = CloseReason(code, reason)
        self._frames.clear()
        self._controls = 0
        self._start_sender()
        if self._on_close is not None:
            self._on_close(self._close_reason)
