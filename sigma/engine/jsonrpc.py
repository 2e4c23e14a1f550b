"""JSON-RPC 2.0: the envelope models, the method registry and the dispatcher.

`dispatch(registry, body)` takes the raw bytes of an HTTP body and returns the bytes to answer
with, or `None` when the spec says nothing is returned (a notification, or a batch made only of
notifications). It implements the whole of JSON-RPC 2.0:

- a single request object, or a batch (a non-empty array) whose calls run concurrently and whose
  replies keep the order of the calls; notifications (no `id` member) get no reply;
- params by name (an object) or by position (an array, mapped onto the params model's fields in
  declaration order); absent params mean `{}`;
- the standard errors: -32700 parse error (body is not JSON), -32600 invalid request (including
  an empty batch, a batch larger than `MAX_BATCH_REQUESTS`, and each invalid element of a batch),
  -32601 method not found, -32602 invalid params (message derived from pydantic's, e.g.
  `path: Field required`), -32603 internal error.

Handlers raise `RpcError` (or `InvalidParams`) for errors the caller should see; any other
exception is logged with its traceback and answered with a bare -32603: no stack trace ever
reaches the wire. Application error codes live in -32000..-32099 and are declared per method, so
`rpc.discover` lists them.

Fault point `engine.method` (`sigma.faults`), when `dispatch` is given it, is passed before each
method runs: `raise` is answered with a bare -32603 like any handler failure, `hang` and `delay`
hold the call, and `drop` leaves it unanswered (`CallDropped`: the server closes the connection;
inside a batch the call is just left out of the replies).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import orjson
import structlog
import trio
from pydantic import (
    BaseModel,
    ConfigDict,
    JsonValue,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from sigma.errors import dotted_location
from sigma.faults import FaultPoint, InjectedFault

log = structlog.get_logger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MAX_BATCH_REQUESTS = 1000
"""Calls in one batch; a longer batch is answered with a single -32600."""

RequestId = StrictStr | StrictInt | StrictFloat | None

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class RpcError(Exception):
    """An error a handler wants the caller to see, as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: JsonValue = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.data = data


class CallDropped(Exception):
    """The `engine.method` fault point said this call goes unanswered."""


class InvalidParams(RpcError):
    """-32602: the params are well-formed but not acceptable (a path outside the data dir...)."""

    def __init__(self, message: str, data: JsonValue = None) -> None:
        super().__init__(INVALID_PARAMS, message, data)


class ErrorObject(BaseModel):
    """The `error` member of a response."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: int
    message: str
    data: JsonValue = None


class Request(BaseModel):
    """One call: a request (with `id`) or a notification (without)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    jsonrpc: Literal["2.0"]
    method: StrictStr
    params: dict[str, Any] | list[Any] | None = None
    id: RequestId = None

    @field_validator("params", mode="before")
    @classmethod
    def _params_present_means_structured(cls, value: object) -> object:
        if value is None:
            raise ValueError("params, when present, must be an object or an array")
        return value

    @property
    def is_notification(self) -> bool:
        """True when the `id` member is absent (an explicit `"id": null` is still a request)."""
        return "id" not in self.model_fields_set


class Response(BaseModel):
    """One reply: exactly one of `result` and `error` is on the wire."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jsonrpc: Literal["2.0"] = "2.0"
    id: RequestId
    result: JsonValue = None
    error: ErrorObject | None = None

    def to_wire(self) -> dict[str, JsonValue]:
        """The JSON object to send, with `error.data` left out when there is none."""
        wire: dict[str, JsonValue] = {"jsonrpc": self.jsonrpc, "id": self.id}
        if self.error is None:
            wire["result"] = self.result
        else:
            wire["error"] = self.error.model_dump(exclude_none=True)
        return wire


@dataclass(frozen=True)
class ErrorInfo:
    """An application error a method may answer with, listed by `rpc.discover`."""

    code: int
    message: str


@dataclass(frozen=True)
class Method(Generic[P, R]):
    """A callable method: its name, params and result models, and its async handler."""

    name: str
    params_model: type[P]
    result_model: type[R]
    handler: Callable[[P], Awaitable[R]]
    errors: tuple[ErrorInfo, ...] = ()
    summary: str = ""

    def describe(self) -> str:
        """One line about the method: `summary`, else the handler's docstring's first line."""
        if self.summary:
            return self.summary
        doc = inspect.getdoc(self.handler) or ""
        return doc.splitlines()[0] if doc else ""


class Registry:
    """The methods the engine answers, by name, in registration order."""

    def __init__(self) -> None:
        self._methods: dict[str, Method[Any, Any]] = {}

    def add(self, method: Method[Any, Any]) -> None:
        """Register a method; a second method with the same name is a programming error."""
        if method.name in self._methods:
            raise ValueError(f"method {method.name!r} is already registered")
        self._methods[method.name] = method

    def get(self, name: str) -> Method[Any, Any] | None:
        """The method called `name`, or None."""
        return self._methods.get(name)

    def __iter__(self) -> Iterator[Method[Any, Any]]:
        return iter(tuple(self._methods.values()))

    def __len__(self) -> int:
        return len(self._methods)


def describe_validation_error(exc: PydanticValidationError) -> str:
    """Pydantic's errors as `key.path: reason; ...`, e.g. `path: Field required`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = dotted_location(error) or "params"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def error_response(
    request_id: RequestId, code: int, message: str, data: JsonValue = None
) -> Response:
    """A response carrying an error object."""
    return Response(id=request_id, error=ErrorObject(code=code, message=message, data=data))


def _readable_id(raw: object) -> RequestId:
    """The id of an invalid request if it can be read, else null (as the spec asks)."""
    if isinstance(raw, dict):
        candidate = raw.get("id")
        if isinstance(candidate, str | int | float) and not isinstance(candidate, bool):
            return candidate
    return None


def _params_by_name(
    method: Method[Any, Any], params: dict[str, Any] | list[Any] | None
) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, dict):
        return params
    fields = list(method.params_model.model_fields)
    if len(params) > len(fields):
        raise InvalidParams(
            f"params: at most {len(fields)} positional params are accepted, got {len(params)}"
        )
    return dict(zip(fields, params, strict=False))


async def call(registry: Registry, raw: object, fault: FaultPoint | None = None) -> Response | None:
    """Run one call (already decoded from JSON); None when no reply is due (a notification).

    Error handling: every failure becomes an error response; only cancellation propagates, and
    `CallDropped` when `fault` drops the call.
    """
    try:
        request = Request.model_validate(raw)
    except PydanticValidationError as exc:
        return error_response(
            _readable_id(raw), INVALID_REQUEST, "Invalid Request", describe_validation_error(exc)
        )
    response = await _run(registry, request, fault)
    return None if request.is_notification else response


async def _run(registry: Registry, request: Request, fault: FaultPoint | None) -> Response:
    method = registry.get(request.method)
    if method is None:
        return error_response(
            request.id, METHOD_NOT_FOUND, "Method not found", {"method": request.method}
        )
    try:
        params = method.params_model.model_validate(_params_by_name(method, request.params))
    except PydanticValidationError as exc:
        return error_response(request.id, INVALID_PARAMS, describe_validation_error(exc))
    except RpcError as exc:
        return error_response(request.id, exc.code, exc.message, exc.data)
    if fault is not None and fault.armed:
        try:
            if await fault.hit():
                raise CallDropped(method.name)
        except InjectedFault as exc:
            log.warning("Fault injected into an RPC method", method=method.name, error=str(exc))
            return error_response(request.id, INTERNAL_ERROR, "Internal error")
    try:
        result = await method.handler(params)
        if not isinstance(result, method.result_model):
            raise TypeError(f"{method.name} returned {type(result).__name__}")
        return Response(id=request.id, result=result.model_dump(mode="json"))
    except RpcError as exc:
        return error_response(request.id, exc.code, exc.message, exc.data)
    except Exception:
        log.exception("RPC method failed", method=method.name)
        return error_response(request.id, INTERNAL_ERROR, "Internal error")


async def _call_batch(
    registry: Registry, batch: list[Any], fault: FaultPoint | None
) -> list[Response]:
    replies: list[Response | None] = [None] * len(batch)

    async def call_into(index: int, raw: object) -> None:
        with contextlib.suppress(CallDropped):  # a dropped call of a batch is not answered
            replies[index] = await call(registry, raw, fault)

    async with trio.open_nursery() as nursery:
        for index, raw in enumerate(batch):
            nursery.start_soon(call_into, index, raw)
    return [reply for reply in replies if reply is not None]


async def dispatch(
    registry: Registry, body: bytes, *, fault: FaultPoint | None = None
) -> bytes | None:
    """Answer one HTTP body: the JSON to send back, or None when nothing is to be returned.

    `fault` is the `engine.method` fault point, passed before each method runs.

    Error handling: never raises for bad input; every error is a JSON-RPC error object.
    Raises `CallDropped` when `fault` drops a single call: the caller must not answer it.
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _encode(error_response(None, PARSE_ERROR, "Parse error", str(exc)))
    if isinstance(decoded, list):
        if not decoded:
            return _encode(error_response(None, INVALID_REQUEST, "Invalid Request", "empty batch"))
        if len(decoded) > MAX_BATCH_REQUESTS:
            detail = f"batch of {len(decoded)} calls; at most {MAX_BATCH_REQUESTS} are allowed"
            return _encode(error_response(None, INVALID_REQUEST, "Invalid Request", detail))
        replies = await _call_batch(registry, decoded, fault)
        return orjson.dumps([reply.to_wire() for reply in replies]) if replies else None
    reply = await call(registry, decoded, fault)
    return None if reply is None else _encode(reply)


def _encode(response: Response) -> bytes:
    return orjson.dumps(response.to_wire())
