"""The hub's task: `run_hub` runs one incarnation of `HubActor` on the inbox until cancelled.

Messages that already wait are handled several to a turn (at most `MESSAGES_PER_TURN`, and
none more once the turn has lasted `TURN_BUDGET_S`) instead of one per pass through trio's
scheduler: a thousand clients joining at once cost a few turns, not a thousand.

Under a watchdog it beats once per message and says it is idle while it waits on its inbox, so
a quiet hub is never taken for a hung one.

Fault point `hub.publish` (`sigma.faults`) is passed before each message is taken from the
inbox, so an injected crash there loses nothing: the message waits for the next incarnation.
"""

from __future__ import annotations

import time

import structlog
import trio

from sigma.config.pipeline import HubConfig
from sigma.faults import FaultPoint, Faults
from sigma.hub.actor import HubActor, Numbering
from sigma.hub.intake import HubIntake
from sigma.hub.messages import HubMessage
from sigma.hub.state import HubState
from sigma.metrics import Metrics
from sigma.protocol.codes import CloseCode
from sigma.supervision.watchdog import Liveness

log = structlog.get_logger("sigma.hub")


async def run_hub(
    inbox: trio.MemoryReceiveChannel[HubMessage],
    config: HubConfig,
    *,
    heartbeat_interval_s: float,
    metrics: Metrics | None = None,
    liveness: Liveness | None = None,
    state: HubState | None = None,
    faults: Faults | None = None,
    intake: HubIntake | None = None,
    numbering: Numbering | None = None,
    node_id: str = "",
    task_status: trio.TaskStatus[HubActor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one incarnation of the hub until cancelled or the inbox ends.

    `metrics`, when given, is told of every broadcast and reads the client table on scrape;
    `liveness` is given by a supervisor that watches the hub (`ChildSpec.watchdog_s`);
    `state`, when given, carries the numbering over from the previous incarnation; `faults`
    holds the `hub.publish` point (never armed without it); `numbering` and `node_id` are
    `HubActor`'s (a cluster node's hub); `intake`, the gate in front of `inbox` that event
    producers use, learns from this incarnation whether the herd lags.

    Resource handling: does not close `inbox` (its owner does). Error handling: a crash
    propagates to the supervisor; either way every client is closed with 1012 on the way out.
    """
    actor = HubActor(
        config,
        heartbeat_interval_s=heartbeat_interval_s,
        metrics=metrics,
        state=state,
        numbering=numbering,
        node_id=node_id,
    )
    log.info("Hub started", epoch=actor.state.epoch, last_seq=actor.state.last_seq)
    if metrics is not None:
        metrics.attach_hub(actor)
    fault = faults.point("hub.publish") if faults is not None else FaultPoint("hub.publish")
    actor.fault = fault
    if intake is not None:
        intake.attach(actor)
    task_status.started(actor)
    try:
        await _serve(actor, inbox, fault, liveness)
    finally:
        if intake is not None:
            intake.detach(actor)
        if metrics is not None:
            metrics.detach_hub(actor)
        actor.close_waiting(CloseCode.SERVICE_RESTART, "hub restarted")
        actor.state.close_all(CloseCode.SERVICE_RESTART, "hub restarted")


MESSAGES_PER_TURN = 64
"""The hub handles at most this many waiting messages in a row before it lets others run..."""
TURN_BUDGET_S = 0.002
"""...and takes no further one once its turn has lasted this long (a broadcast to thousands of
clients can take milliseconds)."""


async def _serve(
    actor: HubActor,
    inbox: trio.MemoryReceiveChannel[HubMessage],
    fault: FaultPoint,
    liveness: Liveness | None,
) -> None:
    """The hub's loop; watched (`liveness`), with a beat per message, and waiting on the inbox
    is idle, not hung."""
    while True:
        if fault.armed:
            # Before taking a message, so a crash here loses none; while watched this is busy,
            # not idle: a hang here is the watchdog's to find.
            await fault.hit()
        if liveness is not None:
            liveness.idle()
        try:
            message = await inbox.receive()
        except trio.EndOfChannel:
            return
        turn_began = time.perf_counter()
        if liveness is not None:
            liveness.beat()
        actor.handle(message)
        if not _handle_waiting(actor, inbox, fault, turn_began, liveness):
            return


def _handle_waiting(
    actor: HubActor,
    inbox: trio.MemoryReceiveChannel[HubMessage],
    fault: FaultPoint,
    turn_began: float,
    liveness: Liveness | None,
) -> bool:
    """Handle the messages that already wait, within one turn's bounds (`MESSAGES_PER_TURN`,
    `TURN_BUDGET_S` of `time.perf_counter()` since `turn_began`); False once the inbox ended.

    `receive` passes through trio's scheduler even when a message waits: a burst (a thousand
    clients joining at once) is handled here in a few turns instead of one turn per message.
    An armed fault point ends the turn, so that it is hit before the next message is taken.
    """
    ends = turn_began + TURN_BUDGET_S
    for _ in range(MESSAGES_PER_TURN - 1):
        if fault.armed or time.perf_counter() >= ends:
            return True
        try:
            message = inbox.receive_nowait()
        except trio.WouldBlock:
            return True
        except trio.EndOfChannel:
            return False
        if liveness is not None:
            liveness.beat()
        actor.handle(message)
    return True
