"""`SupervisionWatch`: wait on the tree's supervision events (crashes, restarts, hangs), no sleeps.

`sigma.app.serve` tees its supervision event stream (`RunningApp.supervision.subscribe()`); a
`SupervisionWatch` reads one such channel, remembers every event it has read, and returns as
soon as the event a test waits for arrives:

    watch = SupervisionWatch(app.supervision.subscribe())
    faults.arm(FaultSpec(point="poller.call", action="raise", once=True))
    await watch.restarted("poller")            # the crash, then the new start
"""

from __future__ import annotations

from typing import TypeVar

import trio

from sigma.supervision.spec import ChildExited, ChildStarted, SupervisionEvent

E = TypeVar("E", bound=SupervisionEvent)
DEFAULT_WAIT_S = 30.0


class SupervisionWatch:
    """Reads a supervision event channel; see the module docstring."""

    def __init__(self, events: trio.MemoryReceiveChannel[SupervisionEvent]) -> None:
        self._events = events
        self.seen: list[SupervisionEvent] = []
        self._read = 0
        """How many of `seen` the waits have looked at already."""

    async def wait_for(
        self, kind: type[E], *, timeout_s: float = DEFAULT_WAIT_S, **fields: object
    ) -> E:
        """The next event of `kind` whose attributes equal `fields` (not one already returned).

        Error handling: `AssertionError` naming what was awaited and the last events seen, past
        `timeout_s` or when the tree stopped first.
        """
        with trio.move_on_after(timeout_s):
            while True:
                while self._read < len(self.seen):
                    event = self.seen[self._read]
                    self._read += 1
                    if isinstance(event, kind) and _matches(event, fields):
                        return event
                try:
                    self.seen.append(await self._events.receive())
                except trio.EndOfChannel:
                    break
        wanted = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        recent = "; ".join(repr(event) for event in self.seen[-5:]) or "none"
        raise AssertionError(
            f"no {kind.__name__}({wanted}) within {timeout_s:g}s; last events seen: {recent}"
        )

    async def restarted(self, child_id: str, *, timeout_s: float = DEFAULT_WAIT_S) -> float:
        """Wait for `child_id` to exit abnormally and start again; returns the seconds between."""
        exited = await self.wait_for(
            ChildExited, child_id=child_id, abnormal=True, timeout_s=timeout_s
        )
        started = await self.wait_for(ChildStarted, child_id=child_id, timeout_s=timeout_s)
        return started.at - exited.at

    def drain(self) -> list[SupervisionEvent]:
        """Take in the events waiting now; return every event seen so far."""
        while True:
            try:
                self.seen.append(self._events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return self.seen

    def of(self, kind: type[E], **fields: object) -> list[E]:
        """The events seen so far (after a `drain`) of `kind` whose attributes equal `fields`."""
        return [e for e in self.drain() if isinstance(e, kind) and _matches(e, fields)]

    def restart_latencies_s(self, child_id: str) -> list[float]:
        """For each abnormal exit of `child_id` seen, the seconds until it was started again."""
        latencies: list[float] = []
        crashed_at: float | None = None
        for event in self.drain():
            if isinstance(event, ChildExited) and event.child_id == child_id and event.abnormal:
                crashed_at = event.at
            elif (
                isinstance(event, ChildStarted)
                and event.child_id == child_id
                and crashed_at is not None
            ):
                latencies.append(event.at - crashed_at)
                crashed_at = None
        return latencies


def _matches(event: SupervisionEvent, fields: dict[str, object]) -> bool:
    return all(getattr(event, name, None) == value for name, value in fields.items())
