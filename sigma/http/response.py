"""The heads of the responses Sigma writes, as h11 events built once and sent again."""

from __future__ import annotations

import functools

import h11

# The 101's headers that are the same for every connection, as bytes (h11 converts less).
SWITCH_HEADERS = ((b"upgrade", b"websocket"), (b"connection", b"Upgrade"))
END_OF_MESSAGE = h11.EndOfMessage()
"""h11 events are immutable: one end-of-message serves every response."""
REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@functools.lru_cache(maxsize=256)
def response_head(
    status: int,
    content_type: str,
    length: int,
    headers: tuple[tuple[str, str], ...],
    closes: bool,
) -> h11.Response:
    """The h11 response head for these values, built (and its headers validated) once.

    Most responses repeat one of a few heads (a publish's `{"seq": n}` differs only in its
    length), and h11 events are immutable, so the same one can be sent again and again.
    `closes`: add `connection: close` unless the caller set `connection` itself.
    """
    all_headers = [("content-type", content_type), ("content-length", str(length)), *headers]
    if closes and not any(name.lower() == "connection" for name, _ in headers):
        all_headers.append(("connection", "close"))
    return h11.Response(status_code=status, headers=all_headers, reason=REASONS.get(status, ""))
