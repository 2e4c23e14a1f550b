"""The observer of the tree's supervision events: each is logged, counted and teed.

`serve` (`sigma.app.serving`) runs it beside the tree on the tree's one event channel; the tee
(`sigma.supervision.tee`) hands copies to whoever subscribes, the wire feed among them.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio

from sigma.metrics import Metrics
from sigma.supervision.observe import log_supervision_event, supervision_debug_enabled
from sigma.supervision.supervisor import SupervisionEvent
from sigma.supervision.tee import SupervisionTee


async def observe_supervision_events(
    events: trio.MemoryReceiveChannel[SupervisionEvent],
    metrics: Metrics,
    tee: SupervisionTee | None = None,
) -> None:
    """Log every supervision event, count it in `metrics` and copy it to `tee`, until it ends.

    Shielded from cancellation, so the events of a shutdown are seen too: it ends when the tree's
    owner closes the send end, after the tree has stopped; then it closes `tee`.
    """
    debug = supervision_debug_enabled()
    with trio.CancelScope(shield=True):
        try:
            async for first in events:
                for event in _and_what_waits(first, events):
                    log_supervision_event(event, debug=debug)
                    metrics.observe_supervision(event)
                    if tee is not None:
                        tee.publish(event)
        finally:
            if tee is not None:
                tee.close()


def _and_what_waits(
    first: SupervisionEvent, events: trio.MemoryReceiveChannel[SupervisionEvent]
) -> Iterator[SupervisionEvent]:
    """`first`, then the events already buffered behind it: a burst (a thousand connections
    opening) is taken in one turn of the task instead of a trip through the run loop each."""
    yield first
    while True:
        try:
            yield events.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
