"""What a `sigma.client` stream yields besides the events themselves.

A stream yields the protocol's own `sigma.protocol.Event` for every broadcast event, and these
explicit values for everything a caller must not miss:

- `Gap`: events that were not delivered (a resume the server could not fill, a new epoch, a hole
  in `seq`, or the server's `events_dropped` notice);
- `Duplicate`: an event whose `seq` was delivered already (it is not yielded as an `Event`);
- `Notice`: a message from the server that answers no request of the caller's: a `rate_limited`
  error, or the answer (`subscriptions`, or an `error` such as `forbidden`) to the subscription
  change the stream makes by itself after each welcome to apply `types`;
- `Connected` and `Disconnected`: each welcome and each lost connection, only when the stream
  was opened with `connection_items=True`.

Every item has `.type` and `.seq` like the wire: an `Event`'s are the event's; the others' `type`
is their own name in lower case (`"gap"`, `"duplicate"`, ...) and their `seq` is None, except a
`Duplicate`'s, which is the repeated event's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sigma.client.connection import Welcome
from sigma.protocol.server_messages import Event, Reply

GapReason = Literal["hole", "events_dropped", "not_recovered", "new_epoch"]


@dataclass(frozen=True)
class Gap:
    """Events that exist on the server but were not delivered to this stream.

    - `reason`: `"hole"` (a jump in `seq` while every type is subscribed), `"events_dropped"`
      (the server dropped `missing` queued events under `drop_oldest`), `"not_recovered"` (a
      resume the server could not fill: its history no longer holds `since`), `"new_epoch"` (the
      server's numbering started again: it restarted).
    - `last_seen`: the last `seq` delivered before the gap (in `previous_epoch`), when known.
    - `resumes_after`: the stream goes on with events after this `seq` (in `epoch`).
    - `missing`: how many events were lost, when that is known.
    """

    type: ClassVar[str] = "gap"
    seq: ClassVar[None] = None
    reason: GapReason
    epoch: str
    previous_epoch: str
    last_seen: int | None
    resumes_after: int | None
    missing: int | None

    def describe(self) -> str:
        """The gap as one line: `3 event(s) missing after seq 41 (hole)`."""
        count = f"{self.missing} event(s)" if self.missing is not None else "events"
        where = f" after seq {self.last_seen}" if self.last_seen is not None else ""
        epochs = (
            f", epoch {self.previous_epoch} -> {self.epoch}"
            if self.previous_epoch != self.epoch
            else ""
        )
        return f"{count} missing{where} ({self.reason}{epochs})"


@dataclass(frozen=True)
class Duplicate:
    """An event delivered a second time (its `seq` is not above the last one delivered)."""

    type: ClassVar[str] = "duplicate"
    event: Event

    @property
    def seq(self) -> int | None:
        """The repeated event's `seq`."""
        return self.event.seq


@dataclass(frozen=True)
class Notice:
    """A server message that answers no request of the caller's; `message` is it as sent."""

    type: ClassVar[str] = "notice"
    seq: ClassVar[None] = None
    message: Reply

    @property
    def kind(self) -> str:
        """The notification's `kind`, or an error's `code`, or the message type."""
        data: dict[str, Any] = self.message.data
        return str(data.get("kind") or data.get("code") or self.message.type)


@dataclass(frozen=True)
class Connected:
    """The stream was welcomed; `since` is the `seq` it asked to resume after (None: it did not
    ask), `recovered` the server's answer."""

    type: ClassVar[str] = "connected"
    seq: ClassVar[None] = None
    url: str
    welcome: Welcome
    since: int | None

    @property
    def resumed(self) -> bool:
        """Whether this connection asked to resume."""
        return self.since is not None

    @property
    def recovered(self) -> bool | None:
        """The welcome's `recovered`: None when the stream did not ask to resume."""
        return self.welcome.recovered


@dataclass(frozen=True)
class Disconnected:
    """A connection ended or could not be made; the stream tries again in `retry_in_s`."""

    type: ClassVar[str] = "disconnected"
    seq: ClassVar[None] = None
    reason: str
    code: int | None
    retry_in_s: float


StreamItem = Event | Gap | Duplicate | Notice | Connected | Disconnected
"""Everything a stream yields."""
