"""What a WebSocket upgrade request asks for in its URL: where to resume, and which types.

`resume_request_of` reads `?since=`, `?epoch=` and `?types=` off the upgrade request into a
`ResumeRequest`, the session's instructions for its `Join`; a malformed value is refused with a
JSON error (400) before anything is upgraded. Plain synchronous functions over a parsed
`HttpRequest`, like the checks of `sigma.gateway.upgrade` that run before them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma.http.request import HttpError, HttpRequest
from sigma.protocol.event_types import CORE_EVENT_TYPES, KNOWN_EVENT_TYPES


@dataclass(frozen=True)
class ResumeRequest:
    """What the client asked for in its URL: resume point, allowed types, wanted types.

    `types`: the subscriptions asked for with `?types=`; None for the default (the core types
    that are allowed).
    """

    since: int | None = None
    epoch: str | None = None
    allowed: frozenset[str] = CORE_EVENT_TYPES
    types: frozenset[str] | None = None


def resume_request_of(request: HttpRequest, allowed: frozenset[str]) -> ResumeRequest:
    """What `request` asks for, for a client whose token allows `allowed`; `HttpError` (400)
    for a malformed `since` or an unknown event type."""
    return ResumeRequest(
        since=_since_of(request),
        epoch=request.query_value("epoch"),
        allowed=allowed,
        types=_types_of(request, allowed),
    )


def _types_of(request: HttpRequest, allowed: frozenset[str]) -> frozenset[str] | None:
    """The subscriptions asked for with `?types=a,b` (None without it: the default ones).

    Types the client's token does not allow are left out, as for a token's claims: the welcome
    lists what was granted. An unknown name is an error.
    """
    raw = request.query_value("types")
    if raw is None:
        return None
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    unknown = sorted(names - KNOWN_EVENT_TYPES)
    if unknown:
        raise HttpError(
            400,
            "unknown_event_type",
            f"unknown event type(s) {', '.join(n[:64] for n in unknown[:5])} in types",
        )
    return names & allowed


def _since_of(request: HttpRequest) -> int | None:
    raw = request.query_value("since")
    if raw is None:
        return None
    try:
        since = int(raw)
    except ValueError:
        raise HttpError(400, "invalid_since", "since must be a non-negative integer") from None
    if since < 0:
        raise HttpError(400, "invalid_since", "since must be a non-negative integer")
    return since
