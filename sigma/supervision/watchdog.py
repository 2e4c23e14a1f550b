"""The actor watchdog: how a supervised actor proves it is alive, and how that is checked.

Trio's cancellation catches an actor that crashes, not one that stops making progress while
still holding its place: an `await` on something that never comes, a lock never released, a
`sleep_forever` left in by mistake. A watched child (`ChildSpec.watchdog_s`) is handed a
`Liveness` as its `liveness=` keyword argument and calls, from its own loop:

- `beat()` each time round (synchronous and cheap: it stores `trio.current_time()`);
- `idle()` just before it blocks on its input, or on a channel whose other end is someone else's
  to watch: silence from then until the next `beat()` is waiting, not a hang.

The supervisor runs `wait_until_hung()` beside each incarnation of a watched child; it returns
once the child has been busy and silent for `timeout_s`, and the supervisor cancels and restarts
the child. The decision (`Liveness.hung`) takes the time as an argument, like every decision in
the project; only `beat()` reads the clock, so the actor need not know the time.

A synchronous loop that never reaches a checkpoint blocks the whole trio run, this check included:
that is beyond any watchdog in the same thread.
"""

from __future__ import annotations

import math

import trio

__all__ = ["Liveness", "wait_until_hung"]


class Liveness:
    """One watched actor's last sign of life, and whether it waits on its input now.

    Written only by the actor (`beat`, `idle`), read only by its supervisor's watchdog.
    """

    __slots__ = ("is_idle", "last_beat_at", "timeout_s")

    def __init__(self, timeout_s: float, *, now: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (got {timeout_s!r})")
        self.timeout_s = timeout_s
        """How long the actor may be busy without a beat before it counts as hung."""
        self.last_beat_at = now
        """`trio.current_time()` of the last `beat()` (or of the watch's start)."""
        self.is_idle = False

    @classmethod
    def unwatched(cls) -> Liveness:
        """A `Liveness` nobody checks: for an actor run without a watchdog, so it can still beat."""
        return cls(math.inf, now=0.0)

    def beat(self) -> None:
        """Record progress now; the actor is busy until it says `idle()`."""
        self.last_beat_at = trio.current_time()
        self.is_idle = False

    def idle(self) -> None:
        """Say the actor is about to wait on its input: not hung, however long it waits."""
        self.is_idle = True

    def silent_for_s(self, now: float) -> float:
        """Seconds since the last beat."""
        return now - self.last_beat_at

    def hung(self, now: float) -> bool:
        """True when the actor has been busy and silent for `timeout_s` or more."""
        return not self.is_idle and now >= self.last_beat_at + self.timeout_s

    def next_check_at(self, now: float) -> float:
        """When it is next worth looking: the deadline of a busy actor, a period later if idle."""
        if self.is_idle:
            return now + self.timeout_s
        return self.last_beat_at + self.timeout_s


async def wait_until_hung(liveness: Liveness, done: trio.Event) -> float | None:
    """Wait until the actor is hung and return how long it was silent, in seconds.

    Returns None as soon as `done` is set (the actor ended by itself). Wakes only at deadlines,
    not on every beat: an actor that beats often costs one check per `timeout_s`.
    """
    while not done.is_set():
        now = trio.current_time()
        if liveness.hung(now):
            return liveness.silent_for_s(now)
        with trio.move_on_at(liveness.next_check_at(now)):
            await done.wait()
    return None
