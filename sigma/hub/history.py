"""What the hub keeps of what it numbered: recent frames for resume, and idempotency keys' seqs.

Both belong to one numbering (one epoch): the hub forgets them together when it takes up a
numbering that does not follow on from its own (`HubState.restart_numbering`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Set

from sigma.hub.frames import Frame

IDEMPOTENCY_KEYS_KEPT = 10_000
"""Idempotency keys a hub that numbers its own events remembers, the oldest forgotten first."""


class ResumeHistory:
    """The newest `size` numbered event frames, for clients that resume with `since`."""

    def __init__(self, size: int) -> None:
        self._frames: deque[tuple[int, Frame]] = deque(maxlen=size)

    def append(self, seq: int, frame: Frame) -> None:
        """Keep the frame of event `seq` (seqs only grow); the oldest goes when full."""
        self._frames.append((seq, frame))

    def clear(self) -> None:
        """Forget every frame (their seqs belong to a numbering that is gone)."""
        self._frames.clear()

    def since(self, seq: int, last_seq: int, types: Set[str]) -> list[Frame] | None:
        """The frames of `types` after `seq`, oldest first, for a client that saw up to `seq`
        of a numbering now at `last_seq`; None when some of what followed `seq` is no longer
        kept (or `seq` is ahead of `last_seq`), so the client cannot be brought up to date."""
        if seq > last_seq:
            return None
        if seq == last_seq:
            return []
        frames = self._frames
        oldest_kept = frames[0][0] if frames else last_seq + 1
        if oldest_kept > seq + 1:
            return None
        return [frame for kept, frame in frames if kept > seq and frame.event_type in types]


class PublishedKeys:
    """The seqs each `Idempotency-Key` got, the oldest forgotten past `size` keys."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seqs: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def get(self, key: str) -> tuple[int, ...] | None:
        """The seqs a publish with `key` got, or None for a key not seen (or forgotten)."""
        return self._seqs.get(key)

    def remember(self, key: str, seqs: tuple[int, ...]) -> None:
        """Keep the seqs `key` got; forget the oldest key when there are too many."""
        self._seqs[key] = seqs
        if len(self._seqs) > self.size:
            self._seqs.popitem(last=False)

    def clear(self) -> None:
        """Forget every key (the numbering they refer to is gone)."""
        self._seqs.clear()
