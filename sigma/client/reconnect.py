"""`Reconnect`: how a stream reconnects, and what each close code and refusal makes it do.

What a close code makes the stream do (`Reconnect` holds the figures):

- 1001 (server stopping), 1012 (hub restarted), 1000, 1006, 1011, any other code: reconnect
  after a full-jitter delay.
- 4008 (slow consumer): reconnect after a delay drawn `slow_consumer_doublings` attempts further
  on: a reader slower than the server does not get faster by coming back at once.
- 1008 (policy violation), 4029 (rate limited): reconnect only after the longest delay,
  `backoff.max_s`, never sooner: no hammering.
- 4001 (token expired): ask `token_source` for a fresh token and reconnect; without one, end
  with `TokenExpired`.
- 1002, 1003, 1007, 1009, 1010 (this client broke the protocol): end with `GatewayClosed`:
  coming back would repeat it.

An HTTP refusal of the upgrade: 401 asks `token_source` once (then ends with `GatewayRefused`),
503 (too many connections) and 5xx are retried like an unreachable gateway, any other status
ends the stream with `GatewayRefused`. A frame that breaks the wire contract ends that
connection (`Disconnected` says why) and counts as a failed attempt. After `max_attempts`
failed attempts in a row (None: never) the stream ends with the last error.

Time goes through trio only (`trio.sleep`), so reconnect timing is exact under
`trio.testing.MockClock`; `rng` makes the jitter reproducible.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sigma.backoff import FullJitter
from sigma.protocol.codes import CloseCode

TokenSource = Callable[[], Awaitable[str]]
"""An async callable that returns a fresh token (called on 4001 and on an HTTP 401)."""

RESUMABLE_SLOWLY = frozenset({CloseCode.POLICY_VIOLATION, CloseCode.RATE_LIMITED})
CLIENT_AT_FAULT = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.MANDATORY_EXTENSION,
    }
)
RETRIED_STATUSES = frozenset({502, 503, 504})
UNAUTHORIZED = 401


@dataclass(frozen=True)
class Reconnect:
    """How a stream reconnects: delays, how far they grow, when it gives up.

    `backoff` draws each delay (full jitter, growing with each failed attempt in a row; a
    welcome starts the count again). `max_attempts`: failed attempts in a row before the stream
    ends with the last error (None: it never gives up). `slow_consumer_doublings`: after a 4008
    the delay is drawn as if that many more attempts had failed. `enabled=False`: the first lost
    connection ends the stream, with `GatewayClosed` for a close and with the error itself
    (`GatewayProtocolError`, ...) otherwise.
    """

    backoff: FullJitter = FullJitter(min_s=0.5, max_s=30.0)
    max_attempts: int | None = None
    slow_consumer_doublings: int = 3
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None (got {self.max_attempts})")
        if self.slow_consumer_doublings < 0:
            raise ValueError(
                f"slow_consumer_doublings must be >= 0 (got {self.slow_consumer_doublings})"
            )
