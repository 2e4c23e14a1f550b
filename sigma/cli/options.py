"""What the client commands (`sigma check`, `sigma watch`) ask for the same way: how to reach
the gateway (`--url`, `--token`, `--timeout`, `--cafile`) and the argparse types behind them."""

from __future__ import annotations

import argparse
import math
import os

from sigma.client import DEFAULT_URL
from sigma.client.connection import check_ws_url

TOKEN_ENV_VAR = "SIGMA_TOKEN"


def seconds_argument(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def url_argument(text: str) -> str:
    """An argparse type: a ws:// or wss:// URL with a host."""
    try:
        return check_ws_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_gateway_options(
    parser: argparse.ArgumentParser, *, timeout_s: float, timeout_help: str
) -> None:
    """Add `--url`, `--token` (default `$SIGMA_TOKEN`), `--timeout` (default `timeout_s`, said
    in `timeout_help`) and `--cafile` to a client command's parser."""
    parser.add_argument(
        "--url",
        type=url_argument,
        default=DEFAULT_URL,
        help=f"the gateway's WebSocket (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV_VAR) or None,
        help=f"a JWT sent as 'Authorization: Bearer' (default ${TOKEN_ENV_VAR})",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_argument,
        default=timeout_s,
        metavar="S",
        help=f"{timeout_help} (default {timeout_s:g})",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="for a wss:// URL: trust only the CA certificate(s) in this PEM file "
        "(default: the system's trusted CAs)",
    )
