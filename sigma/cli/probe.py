"""`sigma check`: a monitoring probe in the Nagios plugin convention.

It connects to the gateway's WebSocket (one `sigma.client` stream, without reconnects), checks
the welcome, waits for one `heartbeat` event, prints ONE status line (`SIGMA OK - heartbeat
seq=12 age=0.4s clients=3 | heartbeat_age=...`) and exits 0 OK, 1 WARNING, 2 CRITICAL or
3 UNKNOWN. Which state follows from what was observed is decided in `sigma.cli.probe_verdict`
(its docstring states the thresholds); this module only observes.

In a cluster (`[broker] kind = "redis"`) every node's heartbeats reach every client; the probe
waits for one of the node it is connected to (the welcome's `node`), so that it checks that
node's whole path through the broker and back, not just that some node is alive.

It runs at most `--timeout` (connect, TLS and WebSocket handshakes, and welcome) plus twice
the maximum heartbeat age (the wait for a heartbeat), so a scheduler's own timeout should allow
that much; a `wss://` handshake that timed out costs up to 2 s more, spent finding out whether
the gateway's certificate was the reason. `--cafile` trusts a private CA.
"""

from __future__ import annotations

import argparse
import functools
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

import trio

import sigma.client
from sigma.cli import probe_verdict
from sigma.cli.options import add_gateway_options, seconds_argument
from sigma.cli.probe_verdict import (
    BrokenContract,
    HeartbeatLimits,
    HeartbeatSeen,
    Observation,
    Status,
    Unreachable,
    Verdict,
    Welcomed,
    assess,
    usage_error,
)
from sigma.client import (
    GatewayClosed,
    GatewayProtocolError,
    GatewayUnavailable,
    Reconnect,
    Stream,
)
from sigma.client.connection import parse_timestamp
from sigma.client.tls import tls_context
from sigma.protocol.server_messages import Event

DEFAULT_TIMEOUT_S = 10.0


async def observe(
    url: str,
    *,
    timeout_s: float,
    max_age_s: float | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Observation:
    """Connect to `url`, read the welcome, wait for a heartbeat: what happened, never raising.

    One `sigma.client` stream that does not reconnect: `timeout_s` bounds the connection (TLS
    included), the handshake and the welcome together; the heartbeat is then awaited up to twice
    the maximum age. `ssl_context` verifies a `wss://` gateway (`tls_context`). Resource
    handling: closes its connection.
    """
    started = trio.current_time()
    try:
        async with sigma.client.connect(
            url,
            token=token,
            ssl_context=ssl_context,
            connect_timeout_s=timeout_s,
            reconnect=Reconnect(enabled=False),
        ) as stream:
            connect_s = trio.current_time() - started
            welcome = stream.last_welcome
            assert welcome is not None  # entered: welcomed
            limits = HeartbeatLimits.for_interval(welcome.heartbeat_interval, max_age_s)
            return await _await_heartbeat(stream, limits, connect_s, node=welcome.node)
    except GatewayUnavailable as exc:
        return Unreachable(str(exc))
    except GatewayProtocolError as exc:
        return BrokenContract(str(exc))


async def _await_heartbeat(
    stream: Stream, limits: HeartbeatLimits, connect_s: float, *, node: str = ""
) -> Welcomed:
    welcomed_at = trio.current_time()

    def ended(heartbeat: HeartbeatSeen | None = None, interrupted: str | None = None) -> Welcomed:
        waited_s = trio.current_time() - welcomed_at
        return Welcomed(limits, connect_s, waited_s, heartbeat, interrupted)

    with trio.move_on_at(welcomed_at + limits.critical_after_s):
        try:
            async for item in stream:
                if (
                    isinstance(item, Event)
                    and item.type == "heartbeat"
                    and (not node or item.data.get("node") == node)
                ):
                    waited_s = trio.current_time() - welcomed_at
                    return ended(heartbeat=_heartbeat_seen(item, waited_s))
        except GatewayClosed as exc:
            return ended(interrupted=f"connection {exc}")
        except GatewayProtocolError as exc:
            return ended(interrupted=f"malformed frame: {exc}")
    return ended()


def _heartbeat_seen(event: Event, waited_s: float) -> HeartbeatSeen:
    lag_s = (datetime.now(UTC) - parse_timestamp(event.timestamp)).total_seconds()
    clients = event.data.get("client_count")
    return HeartbeatSeen(
        seq=event.seq or 0,
        waited_s=waited_s,
        lag_s=max(0.0, lag_s),
        clients=clients if isinstance(clients, int) and not isinstance(clients, bool) else None,
    )


# --- the command line ----------------------------------------------------------------------------


class CheckUsageError(Exception):
    """The command line of `sigma check` cannot be run (exit status 3, UNKNOWN)."""


class _CheckParser(argparse.ArgumentParser):
    """Raises instead of exiting with status 2: a plugin's usage error is UNKNOWN (3)."""

    def error(self, message: str) -> NoReturn:
        raise CheckUsageError(message)


def check_parser() -> argparse.ArgumentParser:
    """The parser of `sigma check`; its errors raise `CheckUsageError`."""
    thresholds = "\n\n".join((probe_verdict.__doc__ or "").split("\n\n")[1:-1])
    parser = _CheckParser(
        prog="sigma check",
        description="Monitoring probe (Nagios plugin): connect, check the welcome, wait for one\n"
        "heartbeat, print one status line, exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN.",
        epilog=thresholds,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_gateway_options(
        parser,
        timeout_s=DEFAULT_TIMEOUT_S,
        timeout_help="seconds for connecting, the handshake and the welcome together",
    )
    parser.add_argument(
        "--max-heartbeat-age",
        type=seconds_argument,
        metavar="S",
        help="the maximum heartbeat age A: older is WARNING, older than 2A (or none within 2A) "
        "is CRITICAL (default: twice the welcome's heartbeat_interval)",
    )
    return parser


def check_main(argv: Sequence[str]) -> int:
    """Run `sigma check` with `argv` (after the word `check`): print one line, return the state."""
    try:
        args = check_parser().parse_args(argv)
        context = tls_context(args.url, args.cafile)
    except (CheckUsageError, ValueError) as exc:
        verdict = usage_error(str(exc))
    else:
        run = functools.partial(
            observe,
            args.url,
            timeout_s=args.timeout,
            max_age_s=args.max_heartbeat_age,
            token=args.token,
            ssl_context=context,
        )
        try:
            verdict = assess(trio.run(run))
        except Exception as exc:  # the probe's own failure is UNKNOWN, never a traceback
            verdict = Verdict(Status.UNKNOWN, f"probe failed: {type(exc).__name__}: {exc}")
    print(verdict.line(), flush=True)
    return int(verdict.status)
