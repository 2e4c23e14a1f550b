"""The stream's bookkeeping of its current connection: the link, and the requests sent on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from trio_websocket import WebSocketConnection

from sigma.client.connection import Welcome
from sigma.protocol.server_messages import Reply


@dataclass
class PendingRequest:
    """A request waiting for its reply; `reply` stays None when the connection was lost."""

    done: trio.Event = field(default_factory=trio.Event)
    reply: Reply | None = None


@dataclass
class Link:
    """The current connection and the requests sent on it."""

    ws: WebSocketConnection
    welcome: Welcome
    pending: dict[str, PendingRequest] = field(default_factory=dict)

    def lost(self) -> None:
        """The connection is gone: wake every waiting request (its reply stays None)."""
        for waiting in self.pending.values():
            waiting.done.set()
        self.pending.clear()
