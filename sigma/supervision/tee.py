"""A tee of the supervision event stream, for whoever wants to watch the tree as it runs.

The tree's one event channel is read by `sigma.app.observe_supervision_events` (the log and the
metrics); it hands each event to a `SupervisionTee` too, which copies it to every subscriber's
channel with `send_nowait`. A subscriber that does not keep up loses events (counted in
`dropped`), never slows the tree down. Tests and tools subscribe; nothing in the tree does.

Resource handling: the tee owns the send ends it creates and closes them all in `close()`, once
the event stream has ended, so a subscriber's `async for` ends after the tree's last event.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from sigma.supervision.spec import SupervisionEvent


class SupervisionTee:
    """Copies supervision events to subscribers; see the module docstring."""

    def __init__(self) -> None:
        self._subscribers: list[
            tuple[trio.MemorySendChannel[SupervisionEvent], Callable[[SupervisionEvent], bool]]
        ] = []
        self._closed = False
        self.dropped = 0
        """Events a full or closed subscriber channel did not take."""

    def subscribe(
        self, buffer: int = 1024, *, where: Callable[[SupervisionEvent], bool] | None = None
    ) -> trio.MemoryReceiveChannel[SupervisionEvent]:
        """A channel that gets every event from now on (`buffer` events may wait in it), or
        only those for which `where(event)` is true: the others cost its reader nothing.

        The channel ends once the tree has stopped; one subscribed after that is already ended.
        """
        send, receive = trio.open_memory_channel[SupervisionEvent](buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers.append((send, where or _every_event))
        return receive

    def publish(self, event: SupervisionEvent) -> None:
        """Copy `event` to every subscriber, without waiting."""
        for send, wanted in self._subscribers:
            if not wanted(event):
                continue
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.dropped += 1

    def close(self) -> None:
        """The stream has ended: end every subscriber's channel."""
        self._closed = True
        for send, _ in self._subscribers:
            send.close()
        self._subscribers.clear()


def _every_event(_: SupervisionEvent) -> bool:
    return True
