"""Sigma's Python client: a stream of a gateway's events that reconnects and resumes by itself.

    async with sigma.client.connect("ws://127.0.0.1:12080/ws") as stream:
        async for item in stream:
            print(item.type, item.seq)

Reading order: `connecting` (`connect()`), `stream` (`Stream`) and `reconnect` (`Reconnect`, what
each close code does): the public API; `items` (what a stream yields besides events: `Gap`,
`Duplicate`, `Notice`, `Connected`, `Disconnected`), `sequence` (the gap and duplicate rules),
`errors`, `link` (the stream's current connection and the requests waiting on it), `connection`
(one WebSocket connection: the welcome, frame decoding, and trio-websocket's exceptions turned
into the project's).
docs/client.md is the user's guide.
"""

from sigma.client.connecting import connect
from sigma.client.connection import (
    DEFAULT_URL,
    GatewayProtocolError,
    GatewayRefused,
    GatewayUnavailable,
    Welcome,
)
from sigma.client.errors import GatewayClosed, RequestFailed, StreamClosed, TokenExpired
from sigma.client.items import Connected, Disconnected, Duplicate, Gap, Notice, StreamItem
from sigma.client.reconnect import Reconnect, TokenSource
from sigma.client.stream import Stream
from sigma.protocol.server_messages import Event

__all__ = [
    "DEFAULT_URL",
    "Connected",
    "Disconnected",
    "Duplicate",
    "Event",
    "Gap",
    "GatewayClosed",
    "GatewayProtocolError",
    "GatewayRefused",
    "GatewayUnavailable",
    "Notice",
    "Reconnect",
    "RequestFailed",
    "Stream",
    "StreamClosed",
    "StreamItem",
    "TokenExpired",
    "TokenSource",
    "Welcome",
    "connect",
]
