"""The poller of a cluster node: it polls the engine only while this node holds the lease.

A standby node tries to take the lease every third of `[broker] lease_s`. The leader runs the
ordinary poller (`sigma.poller.actor.run_poller`) and renews the lease on the same beat; when a
renewal fails, is refused, or takes longer than that third, it stops polling at once and stands
by again. Each event the leader publishes carries the lease's token (`Publish.fence`), which
the numbering script checks, so events of a leader that lost its lease never enter the stream.
A clean stop releases the lease, so the next node takes over within a third of a lease; after
a SIGKILL the lease expires first, so that takes at most a lease and a third.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace

import coredis
import structlog
import trio

from sigma.broker.lease import Lease
from sigma.broker.node import RedisBroker
from sigma.broker.stream import LINK_ERRORS, describe_errors
from sigma.config.pipeline import PollerConfig
from sigma.faults import Faults
from sigma.health import HealthBoard
from sigma.hub.messages import EventSink, HubMessage, Publish
from sigma.metrics import Metrics
from sigma.poller.actor import EngineAddress, run_poller
from sigma.supervision.watchdog import Liveness

log = structlog.get_logger("sigma.broker")


async def run_poller_when_leader(
    config: PollerConfig,
    endpoints: EngineAddress,
    hub: EventSink,
    health: HealthBoard,
    *,
    broker: RedisBroker,
    metrics: Metrics | None = None,
    faults: Faults | None = None,
    liveness: Liveness | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stand by for the lease, poll while holding it, until cancelled.

    `liveness` beats on every try and renewal, and is the poller's own while it polls.
    Resource handling: one Redis client per connection, closed when it ends; the lease is
    released on the way out when it can be. Redis errors are waited out here (a third of a
    lease between tries); `/health` shows `"poller": "leader"` only while this node polls.
    """
    liveness = liveness or Liveness.unwatched()
    lease = Lease(broker.keys.lease, broker.config.lease_s, node_id=broker.node_id)
    period_s = broker.config.lease_s / 3
    task_status.started()
    while True:
        try:
            async with broker.client() as redis:
                while True:
                    liveness.beat()
                    with trio.fail_after(period_s):
                        held = await lease.acquire(redis)
                    if held:
                        await _lead(
                            config,
                            endpoints,
                            hub,
                            health,
                            lease,
                            redis,
                            period_s,
                            metrics=metrics,
                            faults=faults,
                            liveness=liveness,
                        )
                    liveness.idle()
                    await trio.sleep(period_s)
        except* LINK_ERRORS as group:
            log.info("Poller lease unreachable", error=describe_errors(group))
        health.poller_role = "standby"
        liveness.idle()
        await trio.sleep(period_s)


async def _lead(
    config: PollerConfig,
    endpoints: EngineAddress,
    hub: EventSink,
    health: HealthBoard,
    lease: Lease,
    redis: coredis.Redis[bytes],
    period_s: float,
    *,
    metrics: Metrics | None,
    faults: Faults | None,
    liveness: Liveness,
) -> None:
    """Poll until the lease is lost; then stop polling and return (standby)."""
    log.info("Poller lease taken: this node polls the engine", token=lease.token)
    health.poller_role = "leader"
    fenced_send, fenced_receive = trio.open_memory_channel[HubMessage](0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_fence, fenced_receive, hub, lease.token)
            await nursery.start(
                functools.partial(run_poller, metrics=metrics, faults=faults, liveness=liveness),
                config,
                endpoints,
                fenced_send,
                health,
            )
            while True:
                await trio.sleep(period_s)
                with trio.fail_after(period_s):
                    if not await lease.renew(redis):
                        break
            nursery.cancel_scope.cancel()
        log.warning("Poller lease lost: this node stands by", token=lease.token)
    finally:
        health.poller_role = "standby"
        health.engine_reachable = True  # the engine is the leader's to watch now
        with trio.move_on_after(period_s) as cleanup:
            cleanup.shield = True
            with contextlib.suppress(*LINK_ERRORS):  # else it expires on its own
                await lease.release(redis)


async def _fence(
    receive: trio.MemoryReceiveChannel[HubMessage],
    hub: EventSink,
    token: str,
) -> None:
    """Pass the poller's messages to the hub, each publish marked with the lease's token."""
    async for message in receive:
        if isinstance(message, Publish):
            message = replace(message, fence=token)
        await hub.send(message)
