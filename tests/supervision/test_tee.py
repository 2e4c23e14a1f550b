"""The supervision tee: every subscriber gets its copy, filtered by its `where`."""

from __future__ import annotations

import pytest
import trio

from sigma.supervision.spec import ChildStarted
from sigma.supervision.tee import SupervisionTee


def started(supervisor: str, child_id: str) -> ChildStarted:
    return ChildStarted(supervisor=supervisor, at=0.0, child_id=child_id)


async def test_a_subscriber_gets_only_what_its_where_wants_and_others_get_everything() -> None:
    tee = SupervisionTee()
    everything = tee.subscribe(8)
    no_sessions = tee.subscribe(8, where=lambda event: event.supervisor != "sessions")
    for event in (started("sessions", "c-1"), started("root", "hub"), started("sessions", "c-2")):
        tee.publish(event)
    tee.close()
    assert [e.child_id async for e in everything] == ["c-1", "hub", "c-2"]
    assert [e.child_id async for e in no_sessions] == ["hub"]
    assert tee.dropped == 0  # what `where` leaves out is not a drop


async def test_a_full_subscriber_loses_events_counted_and_nobody_waits() -> None:
    tee = SupervisionTee()
    small = tee.subscribe(1)
    tee.publish(started("root", "a"))
    tee.publish(started("root", "b"))
    assert tee.dropped == 1
    assert small.receive_nowait().child_id == "a"
    with pytest.raises(trio.WouldBlock):
        small.receive_nowait()
