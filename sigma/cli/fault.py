"""`sigma fault arm | list | clear`: arm and clear fault points of a running `sigma serve`.

A thin client of the gateway's admin endpoint (`/admin/faults`, see `sigma.gateway.admin_faults`),
which exists only with `[faults] admin = true` and answers loopback peers only. The fault is checked
here first (as a `FaultSpec`), so a typo is a usage error before anything is sent.

Exit status: 0 done; 1 the server refused (or could not be reached); 2 a usage error.
"""

from __future__ import annotations

import argparse
import functools
import json
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from sigma.client.tls import tls_context
from sigma.errors import dotted_location, first_error, stated_reason
from sigma.faults import FAULT_POINTS, FaultSpec

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
DEFAULT_URL = "http://127.0.0.1:12080"
ADMIN_PATH = "/admin/faults"
DEFAULT_TIMEOUT_S = 5.0


class FaultCommandError(Exception):
    """The command could not be done; `exit_status` says whose fault that was."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def add_fault_commands(fault: argparse.ArgumentParser) -> None:
    """Add `fault arm`, `fault list` and `fault clear` to the `sigma fault` parser."""
    actions = fault.add_subparsers(dest="fault_command", required=True)

    def add_url(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", default=DEFAULT_URL, help=f"gateway (default {DEFAULT_URL})")
        sub.add_argument(
            "--cafile",
            metavar="FILE",
            help="for an https:// URL: trust only the CA certificate(s) in this PEM file",
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help=f"seconds to wait for it (default {DEFAULT_TIMEOUT_S:g})",
        )

    arm = actions.add_parser("arm", help="arm one fault point")
    arm.add_argument("point", choices=FAULT_POINTS)
    arm.add_argument("action", choices=["raise", "hang", "delay", "drop"])
    arm.add_argument(
        "--delay", type=float, dest="delay_s", metavar="S", help="seconds, for the delay action"
    )
    trigger = arm.add_mutually_exclusive_group()
    trigger.add_argument("--once", action="store_true", help="fire once, then disarm")
    trigger.add_argument("--every", type=int, metavar="N", help="fire on every Nth hit")
    trigger.add_argument(
        "--probability", type=float, metavar="P", help="fire with this probability"
    )
    arm.add_argument("--seed", type=int, metavar="S", help="random seed, with --probability")
    add_url(arm)

    listing = actions.add_parser("list", help="show every fault point and its state")
    listing.add_argument("--json", action="store_true", help="print the server's JSON as is")
    add_url(listing)

    clear = actions.add_parser("clear", help="disarm one fault point, or all of them")
    clear.add_argument("point", nargs="?", choices=FAULT_POINTS)
    add_url(clear)


def run_fault_command(args: argparse.Namespace) -> int:
    """Run a parsed `sigma fault ...` command; print what happened; return the exit status."""
    try:
        base = _base_url(args.url)
        try:
            verify: ssl.SSLContext | bool = tls_context(base, args.cafile) or True
        except ValueError as exc:
            raise FaultCommandError(str(exc), EXIT_USAGE) from None
        request = functools.partial(_request, base=base, timeout_s=args.timeout, verify=verify)
        if args.fault_command == "arm":
            spec = _spec_of(args)
            row = request("POST", json=spec.model_dump(exclude_none=True))
            print(f"armed {row['point']}: {row['description']}")
        elif args.fault_command == "list":
            rows = request("GET")["points"]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(format_points(rows))
        else:
            params = {"point": args.point} if args.point else None
            request("DELETE", params=params)
            print(f"cleared {args.point or 'every fault point'}")
    except FaultCommandError as error:
        print(f"sigma: {error}", file=sys.stderr)
        return error.exit_status
    return EXIT_OK


def format_points(rows: list[dict[str, Any]]) -> str:
    """The snapshot as a table: point, state, hits and fired counts."""
    header = ("point", "state", "hits", "fired")
    table = [header] + [
        (str(row["point"]), str(row["description"]), str(row["hits"]), str(row["fired"]))
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    return "\n".join(
        f"{point:<{widths[0]}}  {state:<{widths[1]}}  {hits:>{widths[2]}}  {fired:>{widths[3]}}"
        for point, state, hits, fired in table
    )


def _spec_of(args: argparse.Namespace) -> FaultSpec:
    fields: dict[str, Any] = {"point": args.point, "action": args.action, "once": args.once}
    for name in ("delay_s", "every", "probability", "seed"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        return FaultSpec.model_validate(fields)
    except ValidationError as exc:
        first = first_error(exc)
        where, message = dotted_location(first), stated_reason(first)
        raise FaultCommandError(
            f"bad fault: {where + ': ' if where else ''}{message}", EXIT_USAGE
        ) from None


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FaultCommandError(
            f"--url must be the gateway's http://host:port or https://host:port (got {url!r})",
            EXIT_USAGE,
        )
    return f"{parts.scheme}://{parts.netloc}"


def _request(
    method: str, *, base: str, timeout_s: float, verify: ssl.SSLContext | bool, **kwargs: Any
) -> Any:
    """One call to the admin endpoint: its JSON on 200, else `FaultCommandError`."""
    url = base + ADMIN_PATH
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False, verify=verify) as http:
            response = http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise FaultCommandError(
            f"cannot reach {url}: {exc or type(exc).__name__}", EXIT_REFUSED
        ) from None
    if response.status_code == 200:
        return response.json()
    raise FaultCommandError(_refusal(response), EXIT_REFUSED)


def _refusal(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text.strip()[:200] or response.reason_phrase
    hint = ""
    if response.status_code == 404:
        hint = " (is [faults] admin = true in the server's configuration?)"
    elif response.status_code == 403:
        hint = " (the admin endpoint answers loopback peers only)"
    return f"the server refused (HTTP {response.status_code}): {detail}{hint}"
