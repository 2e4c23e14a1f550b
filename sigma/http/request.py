"""What one HTTP request is, once h11 has parsed its head, and what can go wrong with one."""

from __future__ import annotations

from typing import NamedTuple

import h11

MAX_HEAD_BYTES = 16 * 1024
SUPPORTED_HTTP_VERSIONS = frozenset({b"1.0", b"1.1"})


class HttpError(Exception):
    """A request that must be answered with an error status; the message is safe to show.

    `headers` go on the response too (e.g. `WWW-Authenticate` with a 401).
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


class TimedOut(Exception):
    """What the connection waited for (a request head, a body) did not arrive in time."""


def remote_protocol_error(exc: h11.RemoteProtocolError) -> HttpError:
    """The peer sent bad HTTP: 400, or the more precise status h11 suggests (431, 505...)."""
    if exc.error_status_hint == 431:
        return head_too_large()
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
    return HttpError(status, "bad_request", str(exc))


def head_too_large() -> HttpError:
    """431: the request line and headers are over `MAX_HEAD_BYTES`."""
    return HttpError(
        431, "head_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
    )


class HttpRequest(NamedTuple):
    """One parsed request head (a named tuple, as the hub's frames are: one per request)."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: tuple[tuple[bytes, bytes], ...]
    raw: h11.Request

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name), decoded as Latin-1."""
        value = self.raw_header(name.lower().encode())
        return None if value is None else value.decode("latin-1")

    def raw_header(self, lowered_name: bytes) -> bytes | None:
        """The first value of a header as it came, by its lowercase name: `header` without
        converting the name and the value (for a caller that asks every request for one)."""
        for key, value in self.headers:
            if key == lowered_name:
                return value
        return None

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def wants_websocket(self) -> bool:
        """True when this is a WebSocket upgrade request."""
        upgrade = (self.header("upgrade") or "").lower()
        return self.method == "GET" and upgrade == "websocket"
