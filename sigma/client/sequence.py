"""The stream's position and the rules that turn `seq` and the welcome into gaps and duplicates.

No I/O and no clock: `Sequencer` is fed each welcome, subscription change, event and
`events_dropped` notice, and answers with what the caller must see.

- Position: `epoch` and `last_seq` (the highest `seq` seen in that epoch, of any type; the
  welcome's `last_seq` counts). It is the `since`/`epoch` of the next reconnect.
- A resume (the stream asked with `since`/`epoch`) answered with `recovered: true` in the same
  epoch is no gap. `recovered: false` is a `not_recovered` gap, a different epoch a `new_epoch`
  gap; either way the position moves to the welcome's.
- An event with `seq <= last_seq` is a `Duplicate`, unless it is a snapshot (`"snapshot": true`,
  state sent on join), which passes without moving the position.
- A jump in `seq` is a `hole` gap only while the server confirms every event type subscribed,
  the opt-in `supervision` included: otherwise the skipped numbers are events of other types.
  An `events_dropped` notice is a gap of its own, and the hole that follows it is not counted a
  second time.
"""

from __future__ import annotations

from collections.abc import Iterable

from sigma.client.connection import Welcome
from sigma.client.items import Duplicate, Gap
from sigma.protocol.event_types import KNOWN_EVENT_TYPES
from sigma.protocol.server_messages import Event


class Sequencer:
    """One stream's position; see the module docstring for the rules."""

    def __init__(self, *, since: int | None = None, epoch: str | None = None) -> None:
        if (since is None) != (epoch is None):
            raise ValueError("since and epoch go together: give both or neither")
        if since is not None and since < 0:
            raise ValueError(f"since must be >= 0 (got {since})")
        self.epoch = epoch
        self.last_seq = since
        self.server_types: frozenset[str] = frozenset()
        self._dropped_unseen = 0

    @property
    def resume_point(self) -> tuple[int, str] | None:
        """`(since, epoch)` for the next connection, or None before the first welcome."""
        if self.epoch is None or self.last_seq is None:
            return None
        return self.last_seq, self.epoch

    def welcomed(self, welcome: Welcome) -> Gap | None:
        """A new connection's welcome: a `Gap` when its resume did not hold."""
        self.subscribed(welcome.subscriptions)
        self._dropped_unseen = 0
        previous_epoch, last_seen = self.epoch, self.last_seq
        self.epoch = welcome.epoch
        if previous_epoch is None or last_seen is None:
            self.last_seq = welcome.last_seq
            return None
        if welcome.epoch == previous_epoch and welcome.recovered is True:
            return None
        self.last_seq = welcome.last_seq
        if welcome.epoch != previous_epoch:
            return Gap(
                "new_epoch", welcome.epoch, previous_epoch, last_seen, welcome.last_seq, None
            )
        missing = welcome.last_seq - last_seen if welcome.last_seq >= last_seen else None
        return Gap(
            "not_recovered", welcome.epoch, previous_epoch, last_seen, welcome.last_seq, missing
        )

    def subscribed(self, types: Iterable[str]) -> None:
        """The server's answer about this connection's subscriptions."""
        self.server_types = frozenset(types)

    def event(self, event: Event) -> tuple[Gap | None, Event | Duplicate]:
        """One broadcast event: a `Gap` before it when a hole shows, and it or its `Duplicate`."""
        assert event.seq is not None and self.epoch is not None and self.last_seq is not None
        if event.snapshot:  # state on join: history by design, it moves nothing
            return None, event
        if event.seq <= self.last_seq:
            return None, Duplicate(event)
        hole = event.seq - self.last_seq - 1
        excused = min(hole, self._dropped_unseen)
        self._dropped_unseen -= excused
        gap = None
        if hole > excused and self.server_types >= KNOWN_EVENT_TYPES:
            gap = Gap("hole", self.epoch, self.epoch, self.last_seq, event.seq - 1, hole - excused)
        self.last_seq = event.seq
        return gap, event

    def dropped(self, count: int) -> Gap:
        """The server's `events_dropped` notice: `count` events will be missing from here."""
        assert self.epoch is not None
        self._dropped_unseen += count
        return Gap("events_dropped", self.epoch, self.epoch, self.last_seq, None, count)
