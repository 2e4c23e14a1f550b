"""The request heads' timeout of every kept-alive connection, kept by one sweeping task."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from sigma.http.connection import HttpServerConnection


class HeadWatch:
    """Times out the request heads of every connection `serving()` under it, with one task.

    Each connection notes when its head is due (a float, per request) instead of moving a
    deadline in trio; `run` sweeps them every `granularity_s` and cancels the `serving()` scope
    of those waiting past their due time, so a head times out at most `granularity_s` late.
    The sweep sleeps while no connection is served under it (an idle server stays idle).
    """

    def __init__(self, granularity_s: float) -> None:
        self.granularity_s = granularity_s
        self._connections: set[HttpServerConnection] = set()
        self._first_added = trio.Event()

    def add(self, conn: HttpServerConnection) -> None:
        """Watch `conn`'s heads (it entered `serving()`)."""
        self._connections.add(conn)
        self._first_added.set()

    def discard(self, conn: HttpServerConnection) -> None:
        """Stop watching `conn` (it left `serving()`)."""
        self._connections.discard(conn)

    async def run(self) -> None:
        """Sweep until cancelled: every `granularity_s` while any connection is watched."""
        while True:
            if not self._connections:
                self._first_added = trio.Event()
                await self._first_added.wait()
            await trio.sleep(self.granularity_s)
            now = trio.current_time()
            for conn in self._connections:
                conn.cancel_overdue_head(now)
