"""Limits on what clients may take: message rate per client, connections per remote address.

Plain synchronous decisions with no I/O and no clock of their own: callers pass `now` (trio
time, in seconds), so tests drive them with plain numbers.

- `TokenBucket`: the classic bucket, `rate_per_s` tokens a second up to `burst`.
- `MessageRateLimit`: meters one client's frames and says what to do with each: handle it,
  drop it with a `rate_limited` reply, drop it silently (replies are paced so a flood does not
  turn into a flood of replies), or close the connection (4029) on sustained abuse.
- `AddressLimit`: counts live sessions per remote address and refuses past the limit.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

REJECT_NOTICE_INTERVAL_S = 1.0
"""At most one `rate_limited` reply per client per this many seconds."""


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; starts full."""

    __slots__ = ("_tokens", "_updated", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be > 0")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Take `tokens` if there are that many; False (and nothing taken) otherwise."""
        self._refill(now)
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def available(self, now: float) -> float:
        """How many tokens could be taken at `now`."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            self._updated = now


class Verdict(enum.Enum):
    """What to do with one client frame."""

    ACCEPT = "accept"
    REJECT_AND_TELL = "reject_and_tell"  # drop it; reply `rate_limited`
    REJECT_QUIETLY = "reject_quietly"  # drop it; the client was told recently
    CLOSE = "close"  # sustained abuse: close with 4029


class MessageRateLimit:
    """Meters one client's frames: a token bucket, paced rejection replies, an abuse trip.

    Frames beyond the bucket are "excess". Excess frames pour into a second bucket that drains
    at `abuse_excess_frames / abuse_window_s` a second; when more than `abuse_excess_frames`
    excess frames arrive faster than that, the verdict is `CLOSE`. A `rate_per_s` of 0 turns
    the limit off.
    """

    __slots__ = ("_abuse", "_bucket", "_next_notice", "enabled", "rejected")

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        abuse_excess_frames: int,
        abuse_window_s: float,
        now: float,
    ) -> None:
        self.enabled = rate_per_s > 0
        self.rejected = 0
        """Frames dropped since the client was last told (reported in the next reply)."""
        self._bucket = TokenBucket(rate_per_s or math.inf, burst, now)
        self._abuse = TokenBucket(abuse_excess_frames / abuse_window_s, abuse_excess_frames, now)
        self._next_notice = now

    def check(self, now: float) -> Verdict:
        """Say what to do with a frame that arrived at `now`."""
        if not self.enabled or self._bucket.take(now):
            return Verdict.ACCEPT
        self.rejected += 1
        if not self._abuse.take(now):
            return Verdict.CLOSE
        if now >= self._next_notice:
            self._next_notice = now + REJECT_NOTICE_INTERVAL_S
            return Verdict.REJECT_AND_TELL
        return Verdict.REJECT_QUIETLY

    def take_rejected(self) -> int:
        """Return and reset the count of frames dropped since the client was last told."""
        rejected, self.rejected = self.rejected, 0
        return rejected


@dataclass
class AddressLimit:
    """Live sessions per remote address, at most `limit` each.

    `acquire` returns a `Lease` whose `release()` is idempotent, so every path that ends a
    session may call it without double counting.
    """

    limit: int
    counts: dict[str, int] = field(default_factory=dict)

    def acquire(self, address: str) -> Lease | None:
        """Count one more session from `address`; None when it already has `limit`."""
        current = self.counts.get(address, 0)
        if current >= self.limit:
            return None
        self.counts[address] = current + 1
        return Lease(self, address)

    def _release(self, address: str) -> None:
        remaining = self.counts.get(address, 0) - 1
        if remaining > 0:
            self.counts[address] = remaining
        else:
            self.counts.pop(address, None)


class Lease:
    """One counted session from one address; `release()` gives it back exactly once."""

    __slots__ = ("_owner", "address")

    def __init__(self, owner: AddressLimit, address: str) -> None:
        self.address = address
        self._owner: AddressLimit | None = owner

    def release(self) -> None:
        """Stop counting this session; later calls do nothing."""
        if self._owner is not None:
            self._owner._release(self.address)
            self._owner = None
