"""A test helper: reads a supervisor's event stream and waits for, or filters, its events."""

from __future__ import annotations

from typing import TypeVar

import trio

from sigma.supervision.supervisor import SupervisionEvent

E = TypeVar("E", bound=SupervisionEvent)
HANG_GUARD_S = 3600.0  # virtual seconds: only a hang gets this far on the autojump clock


class Observer:
    """Reads the supervision events, remembering every one it has seen."""

    def __init__(self, size: int = 1000) -> None:
        self.send, self._receive = trio.open_memory_channel[SupervisionEvent](size)
        self.seen: list[SupervisionEvent] = []

    async def wait_for(self, kind: type[E], **fields: object) -> E:
        """Read events until one of `kind` whose attributes equal `fields`; return it."""
        with trio.fail_after(HANG_GUARD_S):
            while True:
                event = await self._receive.receive()
                self.seen.append(event)
                if isinstance(event, kind) and all(
                    getattr(event, name) == value for name, value in fields.items()
                ):
                    return event

    def drain(self) -> list[SupervisionEvent]:
        """Take in whatever events are waiting, and return all seen so far."""
        while True:
            try:
                self.seen.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return self.seen

    def of(self, kind: type[E], **fields: object) -> list[E]:
        """The events seen so far of `kind` whose attributes equal `fields`."""
        return [
            event
            for event in self.drain()
            if isinstance(event, kind)
            and all(getattr(event, name) == value for name, value in fields.items())
        ]
