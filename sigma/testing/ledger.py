"""`DeliveryLedger`: what each client of a test received, checked `seq` by `seq`.

Feed it the items of `sigma.client` streams (`await ledger.follow(stream)`, or `record()`), opened
with `connection_items=True` so that it sees each welcome and each lost connection. For each
client it keeps the epoch and the position it started from, and checks every event on its own,
without trusting the stream's verdicts:

- within an epoch each `seq` must be the last one plus one (clients that asked for only some
  types are opened with `contiguous=False`: their holes are other types' events);
- a `seq` not above the last one is a duplicate;
- a resume answered `recovered: false`, or a new epoch, loses the events the stream's `Gap`
  says (a count, or "an unknown number" when the server cannot tell).

`assert_no_loss()`, `assert_no_duplicates()` and `assert_clean()` fail with a message that names
each client and the exact `seq` ranges it lost or received twice. `figures()` sums everything up
for a report. `wait_until()` and `wait_caught_up()` wait for the ledger to change, never poll.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from sigma.client import Connected, Disconnected, Duplicate, Event, Gap, Stream, StreamItem

DEFAULT_WAIT_S = 30.0


@dataclass(frozen=True)
class Loss:
    """Events one client never got: `first..last` in `epoch`, or `count` of them (None: unknown)."""

    epoch: str
    first: int | None
    last: int | None
    count: int | None
    why: str

    def describe(self) -> str:
        """`seq 120-122 (hole)`, or `an unknown number after seq 40 (new_epoch)`."""
        if self.first is not None and self.last is not None:
            span = (
                f"seq {self.first}" if self.first == self.last else f"seq {self.first}-{self.last}"
            )
        else:
            span = f"{self.count if self.count is not None else 'an unknown number of'} event(s)"
        return f"{span} in epoch {self.epoch} ({self.why})"


@dataclass
class ClientLedger:
    """One client's record; `DeliveryLedger.client(name)` makes them."""

    name: str
    contiguous: bool = True
    epoch: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    received: int = 0
    losses: list[Loss] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    resumes: int = 0
    unrecovered: int = 0
    closes: Counter[int | None] = field(default_factory=Counter)
    """Close codes of lost connections (None: an attempt that never connected)."""
    resume_latencies_s: list[float] = field(default_factory=list)
    _disconnected_at: float | None = None
    _explained: str | None = None

    @property
    def lost(self) -> int:
        """Events known lost (unknown counts are not in this figure; see `unknown_losses`)."""
        return sum(loss.count or 0 for loss in self.losses)

    @property
    def unknown_losses(self) -> int:
        """Losses whose size the server could not tell (a new epoch)."""
        return sum(1 for loss in self.losses if loss.count is None)

    def record(self, item: StreamItem, now_s: float) -> None:
        """Check one item of this client's stream."""
        if isinstance(item, Connected):
            self._connected(item, now_s)
        elif isinstance(item, Disconnected):
            self.closes[item.code] += 1
            if self._disconnected_at is None:
                self._disconnected_at = now_s
        elif isinstance(item, Gap):
            self._gap(item)
        elif isinstance(item, Duplicate):
            if item.seq is not None:
                self.duplicates.append(item.seq)
        elif isinstance(item, Event):
            self._event(item)

    def _connected(self, item: Connected, now_s: float) -> None:
        welcome = item.welcome
        if self.epoch is None:
            self.epoch = welcome.epoch
            self.first_seq = self.last_seq = (
                item.since if item.since is not None else welcome.last_seq
            )
            return
        self.resumes += 1
        if welcome.recovered is not True or welcome.epoch != self.epoch:
            self.unrecovered += 1
        if self._disconnected_at is not None:
            self.resume_latencies_s.append(now_s - self._disconnected_at)
            self._disconnected_at = None

    def _gap(self, gap: Gap) -> None:
        if gap.reason in ("hole", "events_dropped"):
            self._explained = gap.reason  # the hole itself shows in the seqs: counted there
            return
        if gap.reason == "not_recovered" and gap.last_seen is not None and gap.missing:
            first = gap.last_seen + 1
            self.losses.append(
                Loss(gap.epoch, first, first + gap.missing - 1, gap.missing, gap.reason)
            )
        elif gap.reason == "new_epoch":
            self.losses.append(
                Loss(gap.previous_epoch, None, None, None, f"new_epoch, after seq {gap.last_seen}")
            )
            if gap.resumes_after:
                self.losses.append(
                    Loss(gap.epoch, 1, gap.resumes_after, gap.resumes_after, "new_epoch")
                )
        self.epoch, self.last_seq = gap.epoch, gap.resumes_after

    def _event(self, event: Event) -> None:
        if event.snapshot:  # state on join: history by design, neither news nor a duplicate
            return
        seq = event.seq
        if seq is None or self.last_seq is None or self.epoch is None:
            raise AssertionError(f"client {self.name}: an event before its welcome: {event!r}")
        if seq <= self.last_seq:
            self.duplicates.append(seq)
            return
        if self.contiguous and seq > self.last_seq + 1:
            why = self._explained or "hole"
            self.losses.append(
                Loss(self.epoch, self.last_seq + 1, seq - 1, seq - self.last_seq - 1, why)
            )
        self._explained = None
        self.last_seq = seq
        self.received += 1

    def problems(self) -> list[str]:
        """One line per kind of trouble; empty when this client got everything exactly once."""
        lines = []
        if self.losses:
            counted = f"{self.lost} event(s)" + (
                f" and {self.unknown_losses} unknown run(s)" if self.unknown_losses else ""
            )
            shown = ", ".join(loss.describe() for loss in self.losses[:10])
            more = f", and {len(self.losses) - 10} more" if len(self.losses) > 10 else ""
            lines.append(f"client {self.name}: lost {counted}: {shown}{more}")
        if self.duplicates:
            counts = Counter(self.duplicates)
            shown = ", ".join(f"seq {seq} x{n + 1}" for seq, n in sorted(counts.items())[:10])
            lines.append(f"client {self.name}: {len(self.duplicates)} duplicate(s): {shown}")
        return lines


class DeliveryLedger:
    """Every client's `ClientLedger`; see the module docstring."""

    def __init__(self) -> None:
        self.clients: dict[str, ClientLedger] = {}
        self._changed = trio.Event()

    def client(self, name: str | None = None, *, contiguous: bool = True) -> ClientLedger:
        """The ledger of client `name` (a new one, numbered, when `name` is None or unknown)."""
        if name is None:
            name = str(len(self.clients))
        if name not in self.clients:
            self.clients[name] = ClientLedger(name, contiguous=contiguous)
        return self.clients[name]

    def record(self, client: ClientLedger, item: StreamItem) -> None:
        """Check one item of `client`'s stream, and wake whoever waits on the ledger."""
        client.record(item, trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    async def follow(self, stream: Stream, name: str | None = None) -> None:
        """Record every item of `stream` until it ends or the caller is cancelled.

        Open the stream with `connection_items=True` to have resumes and closes counted; a
        stream of only some types is checked without the contiguity rule.
        """
        client = self.client(name, contiguous=stream.wanted_types is None)
        async for item in stream:
            self.record(client, item)

    async def wait_until(
        self, predicate: Callable[[DeliveryLedger], bool], *, timeout_s: float = DEFAULT_WAIT_S
    ) -> None:
        """Return once `predicate(self)` holds (checked at each change); `TooSlowError` past
        `timeout_s`."""
        with trio.fail_after(timeout_s):
            while not predicate(self):
                await self._changed.wait()

    async def wait_caught_up(self, seq: int, *, timeout_s: float = DEFAULT_WAIT_S) -> None:
        """Return once every client has seen `seq` (the seq of a last published event).

        On time out the `AssertionError` names the clients still behind and where they are.
        """
        try:
            await self.wait_until(
                lambda ledger: all((c.last_seq or 0) >= seq for c in ledger.clients.values()),
                timeout_s=timeout_s,
            )
        except trio.TooSlowError:
            behind = [
                f"client {c.name} at seq {c.last_seq}"
                for c in self.clients.values()
                if (c.last_seq or 0) < seq
            ]
            raise AssertionError(
                f"not every client reached seq {seq} within {timeout_s:g}s: {', '.join(behind)}"
            ) from None

    # --- totals and assertions ---------------------------------------------------------------

    @property
    def received(self) -> int:
        """Events checked, over every client."""
        return sum(c.received for c in self.clients.values())

    @property
    def lost(self) -> int:
        """Events known lost, over every client."""
        return sum(c.lost for c in self.clients.values())

    @property
    def duplicated(self) -> int:
        """Events received twice or more, over every client."""
        return sum(len(c.duplicates) for c in self.clients.values())

    def closes(self) -> Counter[int | None]:
        """Close codes of lost connections, over every client."""
        return sum((c.closes for c in self.clients.values()), Counter[int | None]())

    def figures(self) -> dict[str, Any]:
        """Totals for a report: clients, events checked, lost, duplicated, resumes, latencies."""
        latencies = [s for c in self.clients.values() for s in c.resume_latencies_s]
        return {
            "clients": len(self.clients),
            "events_checked": self.received,
            "lost": self.lost,
            "unknown_losses": sum(c.unknown_losses for c in self.clients.values()),
            "duplicated": self.duplicated,
            "resumes": sum(c.resumes for c in self.clients.values()),
            "unrecovered": sum(c.unrecovered for c in self.clients.values()),
            "close_codes": {str(k): v for k, v in sorted(self.closes().items(), key=str)},
            "resume_latency": latency_summary(latencies),
        }

    def assert_no_loss(self) -> None:
        """Fail, naming each client and the seqs it lost, unless nothing was lost."""
        self._assert(c for c in self.clients.values() if c.losses)

    def assert_no_duplicates(self) -> None:
        """Fail, naming each client and the seqs it got twice, unless none was."""
        self._assert(c for c in self.clients.values() if c.duplicates)

    def assert_clean(self) -> None:
        """`assert_no_loss` and `assert_no_duplicates` at once, and at least one event checked."""
        self._assert(c for c in self.clients.values() if c.losses or c.duplicates)
        if not self.received:
            raise AssertionError("DeliveryLedger: no event was checked: did the clients follow?")

    def _assert(self, troubled: Iterable[ClientLedger]) -> None:
        bad = list(troubled)
        if not bad:
            return
        lines = [line for client in bad for line in client.problems()]
        shown = lines[:20] + (
            [f"... and {len(lines) - 20} more line(s)"] if len(lines) > 20 else []
        )
        raise AssertionError(
            f"DeliveryLedger: {len(bad)} of {len(self.clients)} client(s) lost or doubled events "
            f"({self.received} events checked, {self.lost} lost, {self.duplicated} duplicated):\n  "
            + "\n  ".join(shown)
        )


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | int | None]:
    """Count, median and max of some latencies, in milliseconds."""
    values = list(latencies_s)
    if not values:
        return {"count": 0, "median_ms": None, "max_ms": None}
    return {
        "count": len(values),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }
