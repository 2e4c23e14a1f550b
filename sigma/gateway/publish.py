"""`POST /api/publish`: a backend injects events, answered with the seqs they got.

The body is one `{"type": ..., "data": {...}}` object (answered `{"seq": n}`) or a JSON array of
them (answered `{"seqs": [...]}`, in order). The path is kept short, because one event per
request is the common case: pydantic validates the body straight from its bytes into the events
themselves (each stamped as it is validated: `events_of_body`), and the hub's intake
(`sigma.hub.intake`) numbers them on this task when the hub is idle, so a request costs no task
switch to the hub and back. An `Idempotency-Key` header (1 to 128 printable ASCII characters)
makes a retried request answer the seqs of the first one instead of publishing again.

Refusals, each a JSON `{"error", "detail"}` and nothing published: 404 `not_found` (the API is
off: `[api] key` is empty), 401 `unauthorized` (wrong or missing bearer key), 400 `invalid_json`
or `invalid_body` (the first problem, with where it is), 413 `body_too_large`, 408
`request_timeout` (the body did not arrive in time), 400 `invalid_idempotency_key`, 503
`broker_unavailable` (a cluster node's broker did not number them in time), and
**503 `overloaded`** with
`Retry-After`: the hub took no new events for `[api] publish_wait_s` (most clients lag, or the
hub's inbox is full). A 2xx means every event is numbered and queued for every subscribed
client; a 503 means none of them was.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from sigma.errors import dotted_location, first_error
from sigma.http.connection import HttpServerConnection
from sigma.http.request import HttpError, HttpRequest
from sigma.hub.intake import HubIntake, Overloaded
from sigma.protocol.event_types import OPT_IN_EVENT_TYPES, EventType
from sigma.protocol.server_messages import Event, make_checked_event

log = structlog.get_logger("sigma.gateway")

PUBLISH_PATH = "/api/publish"
PUBLISH_REPLY_MARGIN_S = 1.0
"""A publish waits for its seqs this much beyond `[broker] publish_timeout_s`."""
MAX_IDEMPOTENCY_KEY_CHARS = 128


class PublishItem(BaseModel):
    """One event in a publish request body."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: EventType
    data: dict[str, Any]


_publish_body: TypeAdapter[PublishItem | list[PublishItem]] = TypeAdapter(
    PublishItem | list[PublishItem]
)


def parse_publish_body(body: bytes) -> PublishItem | list[PublishItem]:
    """Validate a publish body; `HttpError(400)` says what is wrong and where."""
    try:
        return _publish_body.validate_json(body)
    except ValidationError as exc:
        first = first_error(exc)
        if first["type"] == "json_invalid":
            raise HttpError(400, "invalid_json", _json_problem(body)) from None
        raise HttpError(400, "invalid_body", f"{dotted_location(first)}: {first['msg']}") from None


_one_event: TypeAdapter[Event] = TypeAdapter(Event)
_event_list: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
_PUBLISHED_FIELDS = frozenset({"type", "data"})
"""The fields of an `Event` a publish body gives; the server sets the others."""


def events_of_body(body: bytes) -> tuple[tuple[Event, ...], bool]:
    """The events a publish body asks for, each stamped now, and whether the body was an array
    (answered with `seqs`); `HttpError(400)`, as `parse_publish_body` words it, when invalid.

    A valid body is validated straight into `Event`s (JSON object or array, told apart by its
    first byte): one validation per event instead of the union's, then a second one to build
    each event (`make_checked_event`), which saves about 19k instructions of the 40k that
    validating and building one event cost. Anything else (a body that fails, or one that
    sets a field only the server sets: `timestamp`, `seq`, `snapshot`) takes the usual way,
    whose error names the problem as `PublishItem` sees it.
    """
    as_list = body.lstrip()[:1] == b"["
    try:
        events = _event_list.validate_json(body) if as_list else [_one_event.validate_json(body)]
    except ValidationError:
        events = []
    if not events or any(not event.model_fields_set <= _PUBLISHED_FIELDS for event in events):
        parsed = parse_publish_body(body)
        items = parsed if isinstance(parsed, list) else [parsed]
        return tuple(make_checked_event(item.type, item.data) for item in items), as_list
    return tuple(events), as_list


def _json_problem(body: bytes) -> str:
    """orjson's description of what is wrong with `body` (line, column, what it expected)."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    return "invalid JSON"


def check_api_key(request: HttpRequest, key: str) -> bool:
    """True when the request carries `Authorization: Bearer <key>` (compared in constant time)."""
    presented = (request.header("authorization") or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(presented.encode(), key.encode())


def bearer_header_of(key: str) -> bytes | None:
    """The `Authorization` value that `check_api_key` accepts for `key` as it is written by
    clients (`Bearer <key>`), as bytes; None when `key` has no single such form (not ASCII,
    or with surrounding whitespace)."""
    if not key.isascii() or key != key.strip():
        return None
    return b"Bearer " + key.encode()


def overloaded_error(problem: Overloaded, wait_s: float) -> HttpError:
    """The 503 of a publish that found no room: `Retry-After` in whole seconds, at least 1."""
    retry_after = max(1, math.ceil(wait_s))
    why = "most clients lag behind" if problem.reason == "herd_lagging" else "the hub is behind"
    return HttpError(
        503,
        "overloaded",
        f"{why}: no event was accepted in {problem.waited_s:.1f} s; retry later",
        headers=(("retry-after", str(retry_after)),),
    )


def idempotency_key_of(request: HttpRequest) -> str | None:
    """The `Idempotency-Key` header: 1 to 128 printable ASCII characters, or None when absent."""
    value = request.raw_header(b"idempotency-key")
    if value is None:
        return None
    key = value.decode("latin-1").strip()
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise HttpError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
        )
    return key


class PublishApi:
    """Answers `POST /api/publish` on one gateway; see the module docstring."""

    def __init__(
        self, intake: HubIntake, *, key: str, wait_s: float, reply_timeout_s: float
    ) -> None:
        self.intake = intake
        self.key = key
        self.wait_s = wait_s
        self.reply_timeout_s = reply_timeout_s
        self._bearer = bearer_header_of(key)

    def authorised(self, request: HttpRequest) -> bool:
        """`check_api_key` for this API's key; the usual `Bearer <key>` is compared as it came
        (bytes), without decoding, stripping and encoding both sides per request."""
        presented = request.raw_header(b"authorization")
        if (
            presented is not None
            and self._bearer is not None
            and hmac.compare_digest(presented, self._bearer)
        ):
            return True
        return check_api_key(request, self.key)

    async def answer(
        self,
        conn: HttpServerConnection,
        request: HttpRequest,
        read_body: Callable[[HttpServerConnection], Awaitable[bytes]],
    ) -> None:
        """Answer one publish request; `read_body(conn)` reads its body (also when refused, so
        that the connection can be kept alive)."""
        if not self.key:
            raise HttpError(404, "not_found", "the publish API is off ([api] key is empty)")
        authorised = self.authorised(request)
        body = await read_body(conn)
        if not authorised:
            raise HttpError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' is needed")
        events, as_list = events_of_body(body)
        forged = next(
            (i for i, event in enumerate(events) if event.type in OPT_IN_EVENT_TYPES), None
        )
        if forged is not None:
            where = f"{forged}.type" if as_list else "type"
            raise HttpError(
                400, "invalid_body", f"{where}: supervision events come from the tree only"
            )
        key = idempotency_key_of(request)
        try:
            seqs = await self.intake.publish(
                events, key=key, wait_s=self.wait_s, reply_timeout_s=self.reply_timeout_s
            )
        except Overloaded as problem:
            log.info("Publish refused: overloaded", reason=problem.reason, events=len(events))
            raise overloaded_error(problem, self.wait_s) from None
        if seqs is None:
            raise HttpError(
                503,
                "broker_unavailable",
                "the events were not published: the hub (restarting?) or the cluster's broker "
                "(unreachable?) did not take them in time",
            )
        if as_list:
            await conn.respond_json(200, {"seqs": list(seqs)})
        else:
            await conn.respond_json(200, {"seq": seqs[0]})
