"""HTTP/1.1 on a trio stream, parsed and framed by h11; shared by the gateway and the engine.

`HttpServerConnection` reads requests (with keep-alive), reads bounded bodies, writes responses,
and answers a WebSocket upgrade with its `101` (after which `sigma.websocket.connection` owns the
stream). Nothing here parses HTTP by hand: h11 does, in both directions; wsproto computes the
handshake's accept token.

Reading order: `request` (a parsed request head, `HttpError`, `TimedOut`), `response` (the
response heads, built once), `connection` (`HttpServerConnection`), `head_watch` (the heads'
timeout for every kept-alive connection, one sweeping task).
"""

from sigma.http.connection import HttpServerConnection
from sigma.http.head_watch import HeadWatch
from sigma.http.request import HttpError, HttpRequest, TimedOut

__all__ = ["HeadWatch", "HttpError", "HttpRequest", "HttpServerConnection", "TimedOut"]
