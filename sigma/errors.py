"""The project's exceptions, split by whose fault they are.

- `ConfigError`: the operator's configuration is wrong.
- `RemoteError` and subclasses: something outside the process misbehaved (a peer, the engine).
- `SupervisorError` and subclasses: the supervision tree gave up.
"""

from __future__ import annotations


class SigmaError(Exception):
    """Base class of every exception Sigma raises on purpose."""


class ConfigError(SigmaError):
    """A configuration file is missing, unreadable or invalid.

    `str(error)` is the one line shown to the operator: `FILE: KEY.PATH: reason`.
    """


class RemoteError(SigmaError):
    """Something outside this process broke the contract: a client, a peer or the engine."""


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
