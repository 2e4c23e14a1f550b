"""The poller leadership lease: one Redis key that at most one node holds at a time.

`SET key token NX PX lease` takes it when nobody holds it; the holder renews it (`RENEW_LEASE`:
only while the key still holds its own token) every third of the lease. A node that stops
renewing (dead, cut off, paused) loses it when the key expires, and a standby takes it at its
next try: within a lease and a third of the last renewal. The token also fences the leader's
events: the numbering script drops events whose token no longer holds the lease, so a former
leader that has not noticed yet cannot publish as leader.
"""

from __future__ import annotations

import uuid

import coredis
from coredis import PureToken

from sigma.broker.scripts import RELEASE_LEASE, RENEW_LEASE


class Lease:
    """This node's claim on one lease key: its token, and the calls that take and keep it."""

    def __init__(self, key: str, lease_s: float, *, node_id: str) -> None:
        self.key = key
        self.lease_ms = max(1, int(lease_s * 1000))
        self.token = f"{node_id}/{uuid.uuid4().hex[:12]}"

    async def acquire(self, redis: coredis.Redis[bytes]) -> bool:
        """Take the lease if nobody holds it (or renew it if this token does); True if held."""
        taken = await redis.set(self.key, self.token, condition=PureToken.NX, px=self.lease_ms)
        return bool(taken) or await self.renew(redis)

    async def renew(self, redis: coredis.Redis[bytes]) -> bool:
        """Extend the lease by `lease_s` from now; False when another token holds it now."""
        renewed = await redis.eval(RENEW_LEASE, keys=[self.key], args=[self.token, self.lease_ms])
        return bool(renewed)

    async def release(self, redis: coredis.Redis[bytes]) -> None:
        """Give the lease up at once (on a clean stop), if this token still holds it."""
        await redis.eval(RELEASE_LEASE, keys=[self.key], args=[self.token])
