"""Turns supervision events into the log lines operators read.

`log_supervision_event` is called for every event by the tree's supervision consumer
(`sigma.app`), which also counts them for metrics.
"""

from __future__ import annotations

import structlog

from sigma.supervision.spec import (
    ChildExited,
    ChildHung,
    ChildStarted,
    IntensityExceeded,
    RestartScheduled,
    ShutdownTimedOut,
    SupervisionEvent,
)

log = structlog.get_logger("sigma.supervisor")


def log_supervision_event(event: SupervisionEvent) -> None:
    """Log one supervision event at the level its gravity deserves."""
    match event:
        case ChildStarted():
            log.debug("Child started", supervisor=event.supervisor, child=event.child_id)
        case ChildHung():
            log.error(
                "Child hung, cancelling it",
                supervisor=event.supervisor,
                child=event.child_id,
                silent_for_s=round(event.silent_for_s, 3),
            )
        case ChildExited(abnormal=True):
            log.warning(
                "Child crashed",
                supervisor=event.supervisor,
                child=event.child_id,
                reason=event.reason,
            )
        case ChildExited():
            log.debug(
                "Child exited",
                supervisor=event.supervisor,
                child=event.child_id,
                reason=event.reason,
            )
        case RestartScheduled():
            log.info(
                "Restarting child",
                supervisor=event.supervisor,
                child=event.child_id,
                delay_s=round(event.delay_s, 3),
                attempt=event.attempt,
                reason=event.reason,
            )
        case IntensityExceeded():
            log.error(
                "Restart intensity exceeded, giving up",
                supervisor=event.supervisor,
                restarts=event.restarts,
                max_seconds=event.max_seconds,
            )
        case ShutdownTimedOut():
            log.error(
                "Child did not stop in time (unkillable)",
                supervisor=event.supervisor,
                child=event.child_id,
                timeout_s=event.timeout_s,
            )
        case _:
            log.info("Supervision event", event_repr=repr(event))
