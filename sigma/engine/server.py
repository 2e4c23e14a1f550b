"""The engine's HTTP side, and `run_engine`, which wires the engine together and serves it.

HTTP contract (HTTP/1.1 through `sigma.http.HttpServerConnection`, keep-alive):

- `POST /rpc` with a JSON-RPC 2.0 body of at most `MAX_BODY_BYTES`: `200` with the JSON reply, or
  `200` with an empty body when JSON-RPC returns nothing (a notification, or a batch made only of
  notifications). A body that is not JSON is a -32700 reply, still with `200`.
- Any other method on `/rpc`: `405` (with `Allow: POST`); any other path: `404`; a larger body:
  `413`; malformed HTTP: `400`; the engine's own failure: `500`. These bodies are JSON,
  `{"error": "<code>", "detail": "<text>"}`.
- A connection stays open between requests for up to `IDLE_TIMEOUT_S`; a body must arrive within
  `BODY_TIMEOUT_S`.
- With the `engine.method` fault point armed to `drop`, a call is not answered at all: the
  connection is closed, as by an engine that died mid-request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import orjson
import structlog
import trio

from sigma.config.pipeline import EngineConfig
from sigma.engine.compression_methods import CompressionMethods
from sigma.engine.jobs import JobBook
from sigma.engine.jsonrpc import CallDropped, Registry, dispatch
from sigma.engine.methods import HostMethods
from sigma.engine.openrpc import Discovery
from sigma.engine.paths import resolve_data_dir
from sigma.engine.workers import WorkerPool
from sigma.errors import PeerGone
from sigma.faults import FaultPoint, Faults
from sigma.http.connection import HttpServerConnection
from sigma.http.request import HttpError, HttpRequest

log = structlog.get_logger(__name__)

RPC_PATH = "/rpc"
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 120.0
BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EngineHandle:
    """Where a running engine listens: `url` is the JSON-RPC endpoint to POST to."""

    host: str
    port: int
    url: str


def _handle_for(host: str, port: int) -> EngineHandle:
    url_host = f"[{host}]" if ":" in host else host
    return EngineHandle(host=host, port=port, url=f"http://{url_host}:{port}{RPC_PATH}")


def build_registry(pool: WorkerPool, config: EngineConfig) -> Registry:
    """Every method the engine answers, bound to `pool` and the data directory it uses."""
    registry = Registry()
    HostMethods(data_root=pool.data_root, storage_paths=config.storage_paths).register(registry)
    CompressionMethods(pool).register(registry)
    Discovery(registry).register()
    return registry


async def serve_connection(
    registry: Registry, stream: trio.abc.Stream, *, fault: FaultPoint | None = None
) -> None:
    """Answer requests on one connection until the peer closes it, idles out or breaks it.

    `fault` is the `engine.method` fault point, passed before each method runs.

    Resource handling: closes `stream` on every path.

    Error handling: never raises (except cancellation). HTTP errors are answered with their
    status; an unexpected exception is logged and answered with 500 when that is still possible,
    so one connection's crash never reaches the server.
    """
    connection = HttpServerConnection(stream, max_body_bytes=MAX_BODY_BYTES)
    try:
        await _serve_requests(registry, connection, fault)
    except PeerGone:
        pass
    except CallDropped as dropped:
        log.debug("Fault injected: call dropped, connection closed unanswered", method=str(dropped))
    except HttpError as exc:
        await _answer_error(connection, exc.status, exc.error, exc.detail)
    except Exception:
        log.exception("Engine connection handler failed")
        await _answer_error(connection, 500, "internal_error", "the engine failed to answer")
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_requests(
    registry: Registry, connection: HttpServerConnection, fault: FaultPoint | None
) -> None:
    while True:
        request: HttpRequest | None = None
        with trio.move_on_after(IDLE_TIMEOUT_S):
            request = await connection.next_request()
        if request is None:
            return
        try:
            with trio.fail_after(BODY_TIMEOUT_S):
                body = await connection.read_body()
        except trio.TooSlowError:
            raise HttpError(408, "request_timeout", f"no body within {BODY_TIMEOUT_S} s") from None
        await _answer(registry, connection, request, body, fault)
        if not connection.keep_alive:
            return


async def _answer(
    registry: Registry,
    connection: HttpServerConnection,
    request: HttpRequest,
    body: bytes,
    fault: FaultPoint | None = None,
) -> None:
    if request.path != RPC_PATH:
        detail = f"no route for {request.path}; JSON-RPC is served at POST {RPC_PATH}"
        await connection.respond_json(404, {"error": "not_found", "detail": detail})
    elif request.method != "POST":
        payload = {"error": "method_not_allowed", "detail": f"{RPC_PATH} accepts POST only"}
        await connection.respond(405, orjson.dumps(payload), headers=(("allow", "POST"),))
    else:
        reply = await dispatch(registry, body, fault=fault)
        await connection.respond(200, reply or b"")


async def _answer_error(
    connection: HttpServerConnection, status: int, error: str, detail: str
) -> None:
    body = orjson.dumps({"error": error, "detail": detail})
    try:
        # The connection is closed after this answer: say so, or a keep-alive client may send
        # its next request into a closing socket.
        await connection.respond(status, body, headers=(("connection", "close"),))
    except Exception as exc:
        log.debug("Could not send error reply", status=status, reason=repr(exc))


async def _open_listeners(config: EngineConfig) -> list[trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    if config.port == 0:
        # One listener per address of the host, and with port 0 each gets its own port: one
        # handle could not name them all, so keep the first only.
        for extra in listeners[1:]:
            await extra.aclose()
        del listeners[1:]
    return listeners


async def run_engine(
    config: EngineConfig,
    *,
    faults: Faults | None = None,
    task_status: trio.TaskStatus[EngineHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the JSON-RPC engine on `config.host:config.port` until cancelled.

    Creates `config.data_dir` if missing, starts `config.workers` compression workers, binds
    (port 0 picks a free port) and calls `task_status.started(EngineHandle)` once it accepts
    connections. `faults`, when given, holds the `engine.method` point.

    Resource handling: the listening socket, every connection and the worker pool live in this
    call's nursery and are closed when it is cancelled; running jobs are asked to stop and their
    partial output removed before it returns.

    Error handling: a failure to bind or to create the data directory raises `OSError` before
    `started()`; a connection's failure is logged and confined to that connection.
    """
    data_root = await trio.to_thread.run_sync(resolve_data_dir, config.data_dir)
    listeners = await _open_listeners(config)
    try:
        async with trio.open_nursery() as nursery:
            pool = WorkerPool(
                worker_count=config.workers,
                data_root=data_root,
                book=JobBook(config.max_jobs_retained),
            )
            await nursery.start(pool.run)
            registry = build_registry(pool, config)
            fault = faults.point("engine.method") if faults is not None else None
            handler = functools.partial(serve_connection, registry, fault=fault)
            await nursery.start(trio.serve_listeners, handler, listeners)
            port = listeners[0].socket.getsockname()[1]
            handle = _handle_for(config.host, port)
            log.info("Engine listening", url=handle.url, workers=config.workers)
            task_status.started(handle)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
