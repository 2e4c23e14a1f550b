"""When to cut one client off, and when the whole herd is behind: pure decisions, no I/O.

A client's lag is its queue depth (frames queued in its `Outbox`, not yet handed to its socket)
against the queue's capacity (`[hub] queue_size`): its *fill*, 0 empty, 1 full. A queue is
*deep* once it is at least half full. The rules, with the fills (and the time, where it
matters) passed in:

- **The herd lags** when more than half of the clients have deep queues (the median depth is at
  least half the capacity). Then the server, or the clients as a whole, cannot keep up with what
  is published, and cutting them would only make them all reconnect at once: the hub stops
  taking new events instead (`sigma.hub.intake`), until the herd has **recovered**, i.e. until
  the median depth is below a quarter of the capacity (the gap keeps the gate from flapping).
- **A client lags far behind the rest** when its queue is full while the median depth is below
  half the capacity: it is at least half a queue behind the median client. Only such a client
  is cut off (4008) under `disconnect`, or under `conflate` when conflating freed nothing.
  A full client while the herd lags is not cut: the event goes beyond its queue's bound, which
  stays bounded because the hub takes no new events until the herd has recovered; if it is still
  that far behind once the others have caught up, it is cut then.

With one client the herd is that client: it is never cut for lagging, publishers are pushed
back instead, and a client that stopped reading altogether is ended by the keep-alive's ping
timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RECHECK_S = 0.005
"""While the herd lags, how often the depths are read again to see whether it has recovered."""


def is_deep(depth: int, capacity: int) -> bool:
    """A queue at least half full."""
    return 2 * depth >= capacity


def herd_lags(deep: int, clients: int) -> bool:
    """More than half of `clients` have deep queues."""
    return clients > 0 and 2 * deep > clients


def median_fill(fills: Iterable[float]) -> float:
    """The median fill (the lower one of an even count); 0 with no clients.

    The lower one, so that "the median is deep" means what `herd_lags` means: more than half.
    """
    ordered = sorted(fills)
    return ordered[(len(ordered) - 1) // 2] if ordered else 0.0


def lags_far_behind(depth: int, capacity: int, median: float) -> bool:
    """A full queue while the median client's queue is less than half full: cut it off."""
    return depth >= capacity and median < 0.5


def herd_recovered(fills: Iterable[float]) -> bool:
    """The median queue is less than a quarter full."""
    return median_fill(fills) < 0.25


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

    def recheck(self, fills: Iterable[float], now: float) -> bool:
        """Look at the fills again; True when the herd has just recovered."""
        self.checked_at = now
        if self.lagging and herd_recovered(fills):
            self.lagging = False
            return True
        return False
