"""`/admin/faults` on the gateway port: arm, list and clear fault points at run time.

The route exists only with `[faults] admin = true`; otherwise it answers 404 like any unknown
path, whatever the method. When on, it answers loopback peers only (403 for anyone else), since
an armed fault is an outage on demand. `sigma fault ...` (`sigma.cli.fault`) is its client.

- `GET /admin/faults`: 200 `{"points": [...]}`, every point with its state (`Faults.snapshot`).
- `POST /admin/faults` with a `FaultSpec` as JSON, e.g. `{"point": "poller.call", "action":
  "raise", "every": 3}`: arms it; 200 with that point's row. A body that is not JSON is 400
  `invalid_json`; one that is not a valid fault is 400 `invalid_fault` saying what is wrong.
- `DELETE /admin/faults`: disarms every point; `?point=NAME` only that one (400 for an unknown
  name). 200 `{"points": [...]}` afterwards.

The decisions are plain functions over parsed input; the gateway does the I/O.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from sigma.config.gateway import is_loopback
from sigma.errors import dotted_location, first_error, stated_reason
from sigma.faults import FAULT_POINTS, Faults, FaultSpec
from sigma.http.request import HttpError

log = structlog.get_logger("sigma.faults")

ADMIN_FAULTS_PATH = "/admin/faults"
ADMIN_METHODS = frozenset({"GET", "POST", "DELETE"})


def check_admin_access(*, enabled: bool, method: str, peer: str) -> None:
    """Refuse a request the admin endpoint must not serve: 404 off, 403 not loopback, 405."""
    if not enabled:
        raise HttpError(404, "not_found", f"no route for {ADMIN_FAULTS_PATH}")
    if not is_loopback(peer):
        raise HttpError(403, "forbidden", f"{ADMIN_FAULTS_PATH} answers loopback peers only")
    if method not in ADMIN_METHODS:
        raise HttpError(
            405,
            "method_not_allowed",
            f"{ADMIN_FAULTS_PATH} accepts {', '.join(sorted(ADMIN_METHODS))}",
        )


def answer_admin(
    faults: Faults, *, method: str, point: str | None, body: bytes, peer: str
) -> dict[str, Any]:
    """Do what an (access-checked) admin request asks; its JSON answer (status 200).

    Raises `HttpError(400)` for a bad body or an unknown point.
    """
    if method == "GET":
        return {"points": faults.snapshot()}
    if method == "POST":
        spec = parse_fault(body)
        faults.arm(spec)
        log.warning("Fault point armed", point=spec.point, fault=spec.describe(), peer=peer)
        return _row(faults, spec.point)
    if point is not None and point not in FAULT_POINTS:
        raise HttpError(
            400, "unknown_point", f"unknown fault point {point!r}; known: {', '.join(FAULT_POINTS)}"
        )
    faults.clear(point)
    log.warning("Fault points cleared", point=point or "all", peer=peer)
    return {"points": faults.snapshot()}


def parse_fault(body: bytes) -> FaultSpec:
    """A `FaultSpec` from a request body; `HttpError(400)` saying what is wrong otherwise."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", str(exc)) from None
    try:
        return FaultSpec.model_validate(raw)
    except ValidationError as exc:
        first = first_error(exc)
        where, reason = dotted_location(first), stated_reason(first)
        raise HttpError(400, "invalid_fault", f"{where}: {reason}" if where else reason) from None


def _row(faults: Faults, point: str) -> dict[str, Any]:
    return next(row for row in faults.snapshot() if row["point"] == point)
