"""When to cut one client off, and when the whole herd is behind: pure decisions, no I/O.

A client's lag is what it has not been handed yet: the frames queued in its `Outbox` plus the
batch its sender took and is still writing (`Outbox.lag`), against the queue's capacity
(`[hub] queue_size`): its *fill*, 0 when it is level with the hub, 1 a whole queue behind.
A queue is *deep* once it is at least half full (`DEEP_FILL`). The few that may lag on their
own are at most a tenth of the clients, and at least one (`outlier_limit`). The rules, with the
fills (and the time, where it matters) passed in:

- **Probation.** A client whose queue reaches its bound is not cut at once: the event is kept
  past the bound, the client is put on probation, and while any client is on probation the hub
  takes no new events (`sigma.hub.intake`), so whatever made it fall behind gets time to drain.
  It leaves probation once its queue is down to a quarter of the bound (`CALM_FILL`).
- **A client lags far behind the rest** when it has been on probation for the grace
  (`[hub] slow_client_grace_s`), its queue still holds at least its bound, and the median fill
  of the *other* clients (their sockets' buffers counted) is below a quarter (`CALM_FILL`):
  the others drained while nothing new came in, it did not. Only such a client is cut off
  (4008) under `disconnect`, or under `conflate` when conflating freed nothing. Among 100
  clients that keep up, one that stopped reading is cut after the grace; of 2 clients, the one
  that stopped is cut.
- **A client paces the publishers** when it has been on probation for more than half
  (`PACING_SHARE`) of the last ten graces (`PACING_GRACES`), this probation and earlier ones
  together, and the median fill of the others is below a quarter. It reads, but slower than
  what is published: each time it drains, the gate opens only to close on it again, so every
  publisher would go at its pace. It is cut off as one that lags far behind. A client only a
  little slower than what is published holds the gate now and then, not most of the time.
- **The herd lags** when more than the few are deep at once, or when the median of the others
  is still a quarter full after the grace. Then the server, or the clients as a whole, cannot
  keep up with what is published, and cutting them would only make them all reconnect at once:
  nobody is cut (a full client keeps the event past its queue's bound), and the hub takes no new
  events until the herd has **recovered**: no more than the few are even a quarter full
  (`CALM_FILL`; the gap keeps the gate from flapping), and nobody is on probation. The excess
  past the bound stays bounded, since no new event comes in meanwhile.

Why time and not depth alone: when a whole herd falls behind, its clients do not fill up
together (on loopback most of a client's backlog sits in its own receive buffer, already
acknowledged, invisible to the server), so at the moment the first queue is full most others
can still look level although they are as far behind. With the gate closed for the grace, a
client of a lagging herd drains (its reader goes on reading); a stalled one does not.

With one client the herd is that client: it is never cut for lagging, publishers are pushed
back instead, and a client that stopped reading altogether is ended by the keep-alive's ping
timeout. The same holds for the few of a small audience (2 of 10).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

DEEP_FILL = 0.5
"""A queue at least this full (of its capacity) is deep."""
CALM_FILL = 0.25
"""The herd has recovered when no more than the few are at least this full."""
RECHECK_S = 0.005
"""While the herd lags, how often the depths are read again to see whether it has recovered."""
PACING_GRACES = 10
"""How many graces back probation looks to tell a client that paces the publishers."""
PACING_SHARE = 0.5
"""A client on probation for more than this share of that window paces the publishers."""

CutRule = Literal["lags_far_behind", "paces_publishers"]
"""Why probation cut a client off (the metrics' `rule` label)."""
CUT_RULES: tuple[CutRule, ...] = ("lags_far_behind", "paces_publishers")


def is_deep(depth: int, capacity: int) -> bool:
    """A queue at least half full."""
    return depth >= DEEP_FILL * capacity


def outlier_limit(clients: int) -> int:
    """How many clients may lag on their own: a tenth of them, at least one."""
    return max(1, clients // 10)


def count_deep(fills: Iterable[float], threshold: float = DEEP_FILL) -> int:
    """How many of the fills are at least `threshold`."""
    return sum(fill >= threshold for fill in fills)


def herd_lags(deep: int, clients: int) -> bool:
    """More than the few of `clients` have deep queues."""
    return deep > outlier_limit(clients)


def others_of(fills: Mapping[str, float], client_id: str) -> list[float]:
    """The fills of every client in `fills` but `client_id`."""
    return [fill for other, fill in fills.items() if other != client_id]


def rest_is_level(others: Iterable[float]) -> bool:
    """The median of the `others` (their fills) is below a quarter; False with no others (the
    herd is then the one client being judged)."""
    rest = list(others)
    return bool(rest) and statistics.median(rest) < CALM_FILL


def lags_far_behind(fill: float, others: Iterable[float]) -> bool:
    """A client at `fill` (1: its queue holds its bound) lags far behind the `others` (their
    fills): it is at least at its bound while their median is below a quarter. With no others
    the herd is that client: never."""
    return fill >= 1.0 and rest_is_level(others)


def herd_recovered(fills: list[float]) -> bool:
    """No more than the few are at least a quarter full."""
    return not herd_lags(count_deep(fills, CALM_FILL), len(fills))


@dataclass
class HerdWatch:
    """Whether the herd lags now: set by a broadcast, cleared by a later look at the depths.

    `lagging` is read by the hub's intake before each publish; `due_recheck` says when the
    depths are worth reading again (they change as senders drain queues, without telling the
    hub), at most every `RECHECK_S`.
    """

    lagging: bool = False
    since: float = 0.0
    """When the herd started lagging (trio time)."""
    checked_at: float = 0.0
    episodes: int = 0
    """How many times the herd has started lagging."""

    def after_broadcast(self, deep: int, clients: int, now: float) -> bool:
        """Note how many of `clients` had deep queues after a broadcast.

        True when that makes the herd start lagging.
        """
        if self.lagging or not herd_lags(deep, clients):
            return False
        self.lagging = True
        self.since = self.checked_at = now
        self.episodes += 1
        return True

    def due_recheck(self, now: float) -> bool:
        """True while lagging, once `RECHECK_S` has passed since the last look."""
        return self.lagging and now - self.checked_at >= RECHECK_S

    def recheck(self, fills: list[float], now: float) -> bool:
        """Look at the fills again; True when the herd has just recovered."""
        self.checked_at = now
        if self.lagging and herd_recovered(fills):
            self.lagging = False
            return True
        return False


class HeldSpans:
    """One client's past probations, (start, end), that ended within the pacing window when the
    last was added, and their whole length (`total_s`): an upper bound of what lies inside the
    window, so that most reviews need not add the spans up."""

    __slots__ = ("spans", "total_s")

    def __init__(self) -> None:
        self.spans: deque[tuple[float, float]] = deque()
        self.total_s = 0.0

    def add(self, start: float, end: float, horizon: float) -> None:
        """One more probation; those that ended by `horizon` are let go."""
        self.spans.append((start, end))
        self.total_s += end - start
        while self.spans and self.spans[0][1] <= horizon:
            first, last = self.spans.popleft()
            self.total_s -= last - first

    def within(self, horizon: float) -> float:
        """How much of the spans lies after `horizon`."""
        return sum(max(0.0, end - max(start, horizon)) for start, end in self.spans)


@dataclass
class Probation:
    """The clients whose queues reached their bound, since when (trio time), and when each was
    on probation before, as far back as the pacing window reaches.

    While anyone is on probation the hub takes no new events. `review` decides, given every
    client's fill and the time, who has drained (released), who lags far behind the rest after
    `grace_s` or paces the publishers (cut), and who stays.
    """

    grace_s: float
    since: dict[str, float] = field(default_factory=dict)
    earlier: dict[str, HeldSpans] = field(default_factory=dict)
    """Each client's past probations that ended within the pacing window."""
    checked_at: float = 0.0
    started: int = 0
    """How many times a client was put on probation."""

    def __bool__(self) -> bool:
        return bool(self.since)

    @property
    def pacing_window_s(self) -> float:
        """How far back `held_s` looks: `PACING_GRACES` graces."""
        return PACING_GRACES * self.grace_s

    def start(self, client_id: str, now: float) -> None:
        """`client_id`'s queue is at its bound: on probation from `now`, unless it is already."""
        if client_id not in self.since:
            self.since[client_id] = now
            self.started += 1

    def release(self, client_id: str) -> None:
        """Forget `client_id` (it was cut off, or left)."""
        self.since.pop(client_id, None)
        self.earlier.pop(client_id, None)

    def drained(self, client_id: str, now: float) -> None:
        """`client_id` is off probation: its queue is down to a quarter of its bound. The time
        it spent on probation is remembered for the pacing window."""
        since = self.since.pop(client_id, None)
        if since is None:
            return
        past = self.earlier.get(client_id)
        if past is None:
            past = self.earlier[client_id] = HeldSpans()
        past.add(since, now, now - self.pacing_window_s)

    def due(self, client_id: str, now: float) -> bool:
        """On probation for at least the grace."""
        since = self.since.get(client_id)
        return since is not None and now - since >= self.grace_s

    def held_s(self, client_id: str, now: float) -> float:
        """How long `client_id` was on probation within the pacing window up to `now`."""
        horizon = now - self.pacing_window_s
        past = self.earlier.get(client_id)
        held = past.within(horizon) if past is not None else 0.0
        since = self.since.get(client_id)
        if since is not None:
            held += max(0.0, now - max(since, horizon))
        return held

    def paces(self, client_id: str, now: float) -> bool:
        """On probation now, and for more than `PACING_SHARE` of the pacing window."""
        since = self.since.get(client_id)
        if since is None:
            return False
        window = self.pacing_window_s
        limit = PACING_SHARE * window
        current = now - max(since, now - window)
        past = self.earlier.get(client_id)
        if past is None or past.total_s + current <= limit:  # most clients, most of the time
            return current > limit
        return self.held_s(client_id, now) > limit

    def due_review(self, now: float) -> bool:
        """True while anyone is on probation, once `RECHECK_S` has passed since the last look."""
        return bool(self.since) and now - self.checked_at >= RECHECK_S

    def needs_everyone(self, now: float) -> bool:
        """Whether a review now must read every client's fill, not only those on probation:
        someone's grace is over, or someone paces the publishers."""
        return any(self.due(c, now) or self.paces(c, now) for c in self.since)

    def review(self, fills: Mapping[str, float], now: float) -> list[tuple[str, CutRule]]:
        """Look at every client's fill (by id) again; return who must be cut off now, and why.

        A client no longer in `fills` (it left) is released, one down to a quarter of its bound
        has `drained`. One that `lags_far_behind` the others once `due`, or that `paces` the
        publishers while the rest are level, is returned (and released: it is cut).
        """
        self.checked_at = now
        cut: list[tuple[str, CutRule]] = []
        for client_id in list(self.since):
            fill = fills.get(client_id)
            if fill is None:
                self.release(client_id)
                continue
            if fill < CALM_FILL:
                self.drained(client_id, now)
                continue
            due, paces = self.due(client_id, now), self.paces(client_id, now)
            if not (due or paces):
                continue
            others = others_of(fills, client_id)
            if due and lags_far_behind(fill, others):
                cut.append((client_id, "lags_far_behind"))
            elif paces and rest_is_level(others):
                cut.append((client_id, "paces_publishers"))
            else:
                continue
            self.release(client_id)
        return cut
