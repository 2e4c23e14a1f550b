"""When to cut one client off, and when the whole herd is behind: pure decisions, no I/O.

A client's lag is what it has not been handed yet: the frames queued in its `Outbox` plus the
batch its sender took and is still writing (`Outbox.lag`), against the queue's capacity
(`[hub] queue_size`): its *fill*, 0 when it is level with the hub, 1 a whole queue behind.
A queue is *deep* once it is at least half full (`DEEP_FILL`). The few that may lag on their
own are at most a tenth of the clients, and at least one (`outlier_limit`). The rules, with the
fills (and the time, where it matters) passed in:

- **A client lags far behind the rest** when its queue is full while no more than the few are
  even a quarter full (`CALM_FILL`: the herd is not on its way to lagging either):
  only such a client is cut off (4008) under `disconnect`, or under `conflate` when conflating
  freed nothing. Among 100 clients that keep up, one that stopped reading is cut; of 2 clients,
  the one that stopped is cut.
- **The herd lags** when more than the few are deep at once. Then the server, or the clients as
  a whole, cannot keep up with what is published, and cutting them would only make them all
  reconnect at once: nobody is cut (a full client keeps the event past its queue's bound), and
  the hub stops taking new events (`sigma.hub.intake`) until the herd has **recovered**: no
  more than the few are even a quarter full (`CALM_FILL`; the gap keeps the gate from
  flapping). The excess past the bound stays bounded, since no new event comes in meanwhile;
  a client still full once the others have caught up is cut then.

The median would not do: when a whole herd falls behind, its clients do not fill up together
(each kernel socket buffer absorbs a different amount first), so at the moment the first queue
is full most others can still look level, and a median rule cuts them one after another.

With one client the herd is that client: it is never cut for lagging, publishers are pushed
back instead, and a client that stopped reading altogether is ended by the keep-alive's ping
timeout. The same holds for the few of a small audience (2 of 10).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEEP_FILL = 0.5
"""A queue at least this full (of its capacity) is deep."""
CALM_FILL = 0.25
"""The herd has recovered when no more than the few are at least this full."""
RECHECK_S = 0.005
"""While the herd lags, how often the depths are read again to see whether it has recovered."""


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


def lags_far_behind(depth: int, capacity: int, behind: int, clients: int) -> bool:
    """A full queue while no more than the few of `clients` are `behind` (a quarter full or
    more, counted with `CALM_FILL`), and some are not: cut it off."""
    return depth >= capacity and not herd_lags(behind, clients) and behind < clients


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
