"""Turns supervision events into the log lines operators read.

`log_supervision_event` is called for every event by the tree's supervision consumer
(`sigma.app`), which also counts them for metrics.
"""

from __future__ import annotations

import logging

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


def supervision_debug_enabled() -> bool:
    """Whether the supervisor's debug lines are logged now (ask once, not per event)."""
    return bool(log.is_enabled_for(logging.DEBUG))


def log_supervision_event(event: SupervisionEvent, *, debug: bool = True) -> None:
    """Log one supervision event at the level its gravity deserves.

    `debug=False` skips the debug lines (a session's start and normal exit, two per
    connection) without asking structlog, which would build a bound logger to say no.
    """
    match event:
        case ChildStarted():
            if debug:
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
            if not debug:
                return
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
