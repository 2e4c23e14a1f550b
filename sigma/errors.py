"""The project's exceptions, split by whose fault they are.

- `ConfigError`: the operator's configuration is wrong.
- `RemoteError` and subclasses: something outside the process misbehaved (a peer, the engine);
  `PeerGone` is the one "the peer left" of the HTTP and WebSocket edges.
- `SupervisorError` and subclasses: the supervision tree gave up.

Plus three readers of pydantic's `ValidationError`, which every place that turns bad input
into a one-line message starts from: `first_error`, `dotted_location`, `stated_reason`.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails


class SigmaError(Exception):
    """Base class of every exception Sigma raises on purpose."""


class ConfigError(SigmaError):
    """A configuration file is missing, unreadable or invalid.

    `str(error)` is the one line shown to the operator: `FILE: KEY.PATH: reason`.
    """


class RemoteError(SigmaError):
    """Something outside this process broke the contract: a client, a peer or the engine."""


class PeerGone(RemoteError):
    """The peer closed or broke the connection (HTTP or WebSocket): nothing more reaches it."""


class EngineUnavailable(RemoteError):
    """The engine could not be reached, or did not answer in time."""


class EngineProtocolError(RemoteError):
    """The engine answered, but not with a valid JSON-RPC 2.0 response."""


class SupervisorError(SigmaError):
    """A supervisor stopped because it could not keep its children running."""


class StartFailed(SupervisorError):
    """A child failed to start; the siblings started before it were stopped."""


class RestartIntensityExceeded(SupervisorError):
    """More restarts than `max_restarts` happened within `max_seconds`."""


class TooManyChildren(SupervisorError):
    """A dynamic supervisor refused a child because it already runs `max_children`."""


def first_error(exc: ValidationError) -> ErrorDetails:
    """The first of the errors pydantic found: the one a one-line message reports."""
    return exc.errors(include_url=False)[0]


def dotted_location(error: ErrorDetails, *, skip: int = 0) -> str:
    """Where `error` is, as `key.path` (empty at the top level), without `skip` leading parts."""
    return ".".join(str(part) for part in error["loc"][skip:])


def stated_reason(error: ErrorDetails) -> str:
    """What a validator's own `ValueError` said, or else pydantic's message."""
    return str(error.get("ctx", {}).get("error", error["msg"]))


def leaves(error: BaseException) -> list[BaseException]:
    """Every exception inside `error`, nested exception groups opened, in order; a plain
    exception is its own only leaf."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    found: list[BaseException] = []
    for member in error.exceptions:
        found.extend(leaves(member))
    return found
