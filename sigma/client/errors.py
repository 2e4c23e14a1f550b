"""The exceptions a `sigma.client` stream raises once it has ended, and a request's refusal.

The connection-level ones (`GatewayUnavailable`, `GatewayRefused`, `GatewayProtocolError`) live
in `sigma.client.connection`, where trio-websocket's exceptions become the project's.
"""

from __future__ import annotations

from sigma.errors import RemoteError


class GatewayClosed(RemoteError):
    """The gateway closed the connection and the stream will not reconnect.

    `code` and `reason` are the close frame's (None when there was none).
    """

    def __init__(self, message: str, code: int | None, reason: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class TokenExpired(GatewayClosed):
    """Closed with 4001 (token expired or refused) and no `token_source` to ask for a new one."""


class StreamClosed(RemoteError):
    """A request on a stream that has already ended."""


class RequestFailed(RemoteError):
    """The gateway answered a request with an `error` (`code` as in docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
