"""The rpc-poller actor: polls the engine over JSON-RPC 2.0 and publishes what changed.

Reads: nothing but the engine's replies (HTTP POSTs to `endpoints.engine_url`, re-read before
every call, so an engine restarted on another port is followed). Writes: `Publish` messages to
the hub's inbox, one per poll that has something to say (`sigma.poller.changes` says which
events), and `health.engine_reachable`. Exits: only when cancelled, or when the hub's inbox is
closed (the error propagates, for the supervisor to restart it).

Each method in `[poller] intervals_s` is polled at its own interval, one call at a time over one
persistent HTTP connection pool: calls are cheap reads, and one in flight at a time keeps the
events of one poller in a deterministic order and means a dead engine gives one stream of
`connection_error` events rather than one per method.

Every reply is validated against the JSON-RPC 2.0 envelope (`RpcResponse`). A reply that cannot
be used is published as an `rpc_error` with code `INVALID_REPLY` (-32603, the spec's "Internal
error") and a message that starts with "invalid reply".

Fault point `poller.call` (`sigma.faults`) is passed before each call; `drop` skips that poll (the
method is next due on its grid, as after an answer).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Literal, Protocol, Self

import httpx
import orjson
import structlog
import trio
from pydantic import (
    BaseModel,
    ConfigDict,
    JsonValue,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from sigma import __version__
from sigma.config.pipeline import PollerConfig
from sigma.errors import (
    EngineProtocolError,
    EngineUnavailable,
    dotted_location,
    first_error,
    stated_reason,
)
from sigma.faults import FaultPoint, Faults
from sigma.health import HealthBoard
from sigma.hub.messages import EventSink, Publish
from sigma.metrics import Metrics
from sigma.poller.changes import TRACKED_METHODS, ChangeTracker, EngineLink
from sigma.protocol.server_messages import Event
from sigma.supervision.watchdog import Liveness

log = structlog.get_logger("sigma.poller")

INVALID_REPLY = -32603
"""The `rpc_error` code for a reply that is not usable JSON-RPC 2.0 (or a result of the wrong
shape); the event's message says what was wrong."""

GATEWAY_STATUSES = frozenset({502, 503, 504})
"""HTTP statuses by which a proxy says the engine behind it is not answering."""


class EngineAddress(Protocol):
    """Where the engine is: `sigma.app.Endpoints` is one."""

    @property
    def engine_url(self) -> str:
        """The engine's JSON-RPC URL; empty until the engine has started."""
        ...


# --- the JSON-RPC 2.0 envelope ----------------------------------------------------------------


class RpcRequest(BaseModel):
    """One call, without params: every method the poller calls takes none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jsonrpc: Literal["2.0"] = "2.0"
    method: str
    id: int


class RpcErrorObject(BaseModel):
    """The `error` member of a reply."""

    model_config = ConfigDict(frozen=True)

    code: StrictInt
    message: StrictStr
    data: JsonValue = None


class RpcResponse(BaseModel):
    """One reply: `jsonrpc` "2.0", an `id`, and exactly one of `result` and `error`."""

    model_config = ConfigDict(frozen=True)

    jsonrpc: Literal["2.0"]
    id: StrictStr | StrictInt | None
    result: JsonValue = None
    error: RpcErrorObject | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> Self:
        has_result = "result" in self.model_fields_set
        if has_result and self.error is not None:
            raise ValueError("reply has both result and error")
        if not has_result and self.error is None:
            raise ValueError("reply has neither result nor error")
        return self


def decode_reply(body: bytes, request_id: int, *, http_status: int = 200) -> RpcResponse:
    """Validate the body of a reply to call `request_id`.

    Raises `EngineProtocolError` saying what is wrong: not JSON, not an object, not JSON-RPC 2.0,
    or the id of another call. An error reply with a null id is accepted (the spec's answer to a
    request the server could not read).
    """
    status = "" if http_status == 200 else f" (HTTP {http_status})"
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EngineProtocolError(f"invalid reply{status}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise EngineProtocolError(f"invalid reply{status}: expected a JSON object")
    try:
        reply = RpcResponse.model_validate(raw)
    except ValidationError as exc:
        raise EngineProtocolError(f"invalid reply{status}: {_describe(exc)}") from exc
    if reply.id != request_id and not (reply.id is None and reply.error is not None):
        raise EngineProtocolError(
            f"invalid reply{status}: id {reply.id!r} does not match the request's id {request_id}"
        )
    return reply


def _describe(exc: ValidationError) -> str:
    first = first_error(exc)
    if first["type"] == "value_error":
        return stated_reason(first)
    location = dotted_location(first) or "reply"
    return f"{location}: {first['msg']} (got {first.get('input')!r:.80})"


# --- the one I/O edge -------------------------------------------------------------------------


class EngineClient:
    """Calls engine methods over one persistent `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, *, timeout_s: float) -> None:
        self._http = http
        self._timeout_s = timeout_s
        self._ids = itertools.count(1)

    async def call(self, url: str, method: str) -> RpcResponse:
        """Call `method` at `url` and return its validated reply (which may be an error reply).

        Raises `EngineUnavailable` when no answer came within `timeout_s`, `EngineProtocolError`
        when the answer is not a JSON-RPC 2.0 reply to this call.
        """
        if not url:
            raise EngineUnavailable("the engine's URL is not known yet")
        request = RpcRequest(method=method, id=next(self._ids))
        status, body = await self._post(url, request.model_dump_json().encode())
        return decode_reply(body, request.id, http_status=status)

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """The choke point where httpx's exceptions become Sigma's."""
        try:
            with trio.fail_after(self._timeout_s):
                try:
                    response = await self._send(url, body)
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    # Most likely a kept-alive connection the engine closed meanwhile (it restarted,
                    # or idled it out); the call is a read, so once more on a new connection.
                    response = await self._send(url, body)
        except trio.TooSlowError as exc:
            raise EngineUnavailable(f"no reply within {self._timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(_describe_exception(exc)) from exc
        except httpx.HTTPError as exc:
            raise EngineProtocolError(f"invalid reply: {_describe_exception(exc)}") from exc
        if response.status_code in GATEWAY_STATUSES:
            raise EngineUnavailable(f"HTTP {response.status_code} from {url}")
        return response.status_code, response.content

    async def _send(self, url: str, body: bytes) -> httpx.Response:
        return await self._http.post(
            url, content=body, headers={"content-type": "application/json"}
        )


def _describe_exception(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# --- scheduling -------------------------------------------------------------------------------


class PollSchedule:
    """When each method is next due: on its own grid of intervals, never catching up in bursts.

    All methods are due at `start`, in configuration order. After a poll the method is due at the
    next point of its grid that lies after `now`, so a slow reply or an outage skips the slots it
    missed instead of firing them back to back.
    """

    def __init__(self, intervals_s: Mapping[str, float], *, start: float) -> None:
        self._intervals_s = dict(intervals_s)
        self._due = dict.fromkeys(intervals_s, start)

    def next(self) -> tuple[str, float]:
        """The method due first and when (the earliest configured one on a tie)."""
        return min(self._due.items(), key=lambda item: item[1])

    def polled(self, method: str, now: float) -> None:
        """Record that `method` was polled, finishing at `now`."""
        due, interval_s = self._due[method], self._intervals_s[method]
        self._due[method] = due + (math.floor(max(0.0, now - due) / interval_s) + 1) * interval_s


# --- the actor --------------------------------------------------------------------------------


async def run_poller(
    config: PollerConfig,
    endpoints: EngineAddress,
    hub: EventSink,
    health: HealthBoard,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    metrics: Metrics | None = None,
    liveness: Liveness | None = None,
    faults: Faults | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll the engine's methods at their intervals and publish events until cancelled.

    `started()` comes once the HTTP client is open, before the first call. `transport` replaces
    httpx's network transport (tests use `httpx.MockTransport`); `rng` is the backoff jitter's
    source. Proxy settings from the environment are ignored: the engine's URL is explicit.
    `metrics`, when given, times every call and counts `rpc_error` events. `liveness` is given by
    a supervisor that watches the poller: it beats once per turn (each wait in a turn is bounded:
    the next due time, the call's timeout, the retry delay) and waiting for room in the hub's
    inbox counts as idle. `faults` holds the `poller.call` point.

    Resource handling: owns one `httpx.AsyncClient` (and its connections), closed on the way
    out whatever the exit. Does not close `hub`, which other producers share.

    Error handling: an unreachable or silent engine (`EngineUnavailable`) publishes a
    `connection_error`, sets `health.engine_reachable` to False and retries after a backoff
    delay; the next answer publishes an `engine_recovered` notification and sets it True again.
    An error reply, an invalid reply (`EngineProtocolError`) or a result of the wrong shape
    publishes an `rpc_error`, and polling goes on. Anything else (a closed hub inbox, a bug)
    propagates, for the supervisor to restart the poller.
    """
    tracker = ChangeTracker()
    liveness = liveness or Liveness.unwatched()
    fault = faults.point("poller.call") if faults is not None else FaultPoint("poller.call")
    link = EngineLink(
        min_s=config.retry_min_s, max_s=config.retry_max_s, rng=rng or random.Random()
    )
    untracked = sorted(set(config.intervals_s) - TRACKED_METHODS)
    if untracked:
        log.info("Polled methods without events, replies only checked", methods=untracked)
    async with httpx.AsyncClient(
        transport=transport,
        timeout=config.timeout_s,
        trust_env=False,
        headers={"user-agent": f"sigma-poller/{__version__}"},
    ) as http:
        engine = EngineClient(http, timeout_s=config.timeout_s)
        schedule = PollSchedule(config.intervals_s, start=trio.current_time())
        task_status.started()
        if not config.intervals_s:
            liveness.idle()
            await trio.sleep_forever()
        while True:
            liveness.beat()
            method, due = schedule.next()
            await trio.sleep_until(due)
            if fault.armed and await fault.hit():
                schedule.polled(method, trio.current_time())
                continue
            url = endpoints.engine_url
            called_at = trio.current_time()
            try:
                try:
                    reply = await engine.call(url, method)
                finally:
                    if metrics is not None:
                        metrics.observe_poll(method, trio.current_time() - called_at)
            except EngineUnavailable as exc:
                event, retry_in_s = link.failed(url, str(exc))
                health.engine_reachable = False
                _log_failure(event)
                liveness.idle()
                await hub.send(Publish((event,)))
                liveness.beat()
                await trio.sleep(retry_in_s)
                continue
            except EngineProtocolError as exc:
                events = [_rpc_error(method, INVALID_REPLY, str(exc))]
            else:
                events = _reply_events(tracker, method, reply)
            if metrics is not None:
                _count_rpc_errors(metrics, events)
            recovered = link.answered(url)
            if recovered:
                log.info("Engine reachable again", **recovered[0].data)
            health.engine_reachable = True
            schedule.polled(method, trio.current_time())
            if recovered or events:
                liveness.idle()
                await hub.send(Publish((*recovered, *events)))


def _reply_events(tracker: ChangeTracker, method: str, reply: RpcResponse) -> list[Event]:
    if reply.error is not None:
        error = reply.error
        return [_rpc_error(method, error.code, error.message, error.data)]
    try:
        return tracker.on_result(method, reply.result)
    except EngineProtocolError as exc:
        return [_rpc_error(method, INVALID_REPLY, f"invalid reply: {exc}")]


def _count_rpc_errors(metrics: Metrics, events: list[Event]) -> None:
    for event in events:
        if event.type == "rpc_error":
            metrics.count_rpc_error(event.data["method"], event.data["code"])


def _rpc_error(method: str, code: int, message: str, data: JsonValue = None) -> Event:
    log.debug("RPC error", method=method, code=code, message=message)
    return ChangeTracker.rpc_error(method, code, message, data)


def _log_failure(event: Event) -> None:
    fields = event.data
    if fields["attempt"] == 1:
        log.warning("Engine unreachable", **fields)
    else:
        log.debug("Engine still unreachable", **fields)
