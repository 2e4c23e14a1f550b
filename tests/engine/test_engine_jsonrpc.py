"""The JSON-RPC 2.0 dispatcher, without sockets: envelopes, batches, notifications, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from structlog.testing import capture_logs

from sigma.engine.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH_REQUESTS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Method,
    Registry,
    RpcError,
    dispatch,
)
from sigma.engine.models import NoParams, Params, Result


class EchoParams(Params):
    path: str
    count: int = 1


class EchoResult(Result):
    path: str
    count: int


class Empty(Result):
    pass


class Calls:
    """Toy handlers, recording what they were called with."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.both_running = trio.Event()
        self.arrived = 0

    async def echo(self, params: EchoParams) -> EchoResult:
        self.seen.append(params.path)
        return EchoResult(path=params.path, count=params.count)

    async def boom(self, params: NoParams) -> Empty:
        raise RuntimeError("secret detail /etc/shadow")

    async def refuse(self, params: NoParams) -> Empty:
        raise RpcError(-32010, "Refused", {"why": "because"})

    async def wrong_result(self, params: NoParams) -> Empty:
        return EchoResult(path="x", count=1)  # type: ignore[return-value]

    async def rendezvous(self, params: NoParams) -> Empty:
        self.arrived += 1
        if self.arrived == 2:
            self.both_running.set()
        with trio.fail_after(2):
            await self.both_running.wait()
        return Empty()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def registry(calls: Calls) -> Registry:
    registry = Registry()
    registry.add(Method("echo", EchoParams, EchoResult, calls.echo))
    registry.add(Method("boom", NoParams, Empty, calls.boom))
    registry.add(Method("refuse", NoParams, Empty, calls.refuse))
    registry.add(Method("wrong_result", NoParams, Empty, calls.wrong_result))
    registry.add(Method("rendezvous", NoParams, Empty, calls.rendezvous))
    return registry


async def send(registry: Registry, payload: object) -> Any:
    reply = await dispatch(registry, orjson.dumps(payload))
    return None if reply is None else orjson.loads(reply)


def request(method: str, params: object = None, request_id: object = 1) -> dict[str, object]:
    call: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        call["params"] = params
    return call


def notification(method: str, params: object = None) -> dict[str, object]:
    call = request(method, params)
    del call["id"]
    return call


async def test_by_name_params_give_a_result(registry: Registry) -> None:
    reply = await send(registry, request("echo", {"path": "a", "count": 3}, "abc"))
    assert reply == {"jsonrpc": "2.0", "id": "abc", "result": {"path": "a", "count": 3}}


async def test_positional_params_map_onto_fields_in_order(registry: Registry) -> None:
    reply = await send(registry, request("echo", ["a", 2]))
    assert reply["result"] == {"path": "a", "count": 2}
    reply = await send(registry, request("echo", ["b"]))
    assert reply["result"] == {"path": "b", "count": 1}


async def test_too_many_positional_params_is_invalid_params(registry: Registry) -> None:
    reply = await send(registry, request("echo", ["a", 2, 3]))
    assert reply["error"]["code"] == INVALID_PARAMS
    assert "at most 2 positional" in reply["error"]["message"]


@pytest.mark.parametrize("params", [None, {}, []])
async def test_absent_or_empty_params_mean_no_params(registry: Registry, params: object) -> None:
    reply = await send(registry, request("refuse", params))
    assert reply["error"]["code"] == -32010


@pytest.mark.parametrize("request_id", ["x", 7, 1.5, None])
async def test_request_id_is_echoed(registry: Registry, request_id: object) -> None:
    reply = await send(registry, request("echo", {"path": "a"}, request_id))
    assert reply["id"] == request_id
    assert "result" in reply


async def test_parse_error(registry: Registry) -> None:
    reply = orjson.loads(await dispatch(registry, b'{"jsonrpc": "2.0", "method"') or b"")
    assert reply["id"] is None
    assert reply["error"]["code"] == PARSE_ERROR
    assert reply["error"]["message"] == "Parse error"


@pytest.mark.parametrize(
    "call",
    [
        1,
        "echo",
        None,
        {"method": "echo", "id": 1},
        {"jsonrpc": "1.0", "method": "echo", "id": 1},
        {"jsonrpc": "2.0", "method": 1, "id": 1},
        {"jsonrpc": "2.0", "method": "echo", "params": "bar", "id": 1},
        {"jsonrpc": "2.0", "method": "echo", "params": None, "id": 1},
        {"jsonrpc": "2.0", "method": "echo", "id": True},
        {"jsonrpc": "2.0", "method": "echo", "id": [1]},
        {"jsonrpc": "2.0", "method": "echo", "id": 1, "extra": 1},
    ],
)
async def test_invalid_request(registry: Registry, call: object) -> None:
    reply = await send(registry, call)
    assert reply["error"]["code"] == INVALID_REQUEST
    assert reply["error"]["message"] == "Invalid Request"
    assert reply["id"] in (None, 1)


async def test_invalid_request_without_id_is_still_answered(registry: Registry) -> None:
    reply = await send(registry, {"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert reply == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": INVALID_REQUEST,
            "message": "Invalid Request",
            "data": reply["error"]["data"],
        },
    }


async def test_empty_batch_is_one_invalid_request(registry: Registry) -> None:
    reply = await send(registry, [])
    assert reply["error"]["code"] == INVALID_REQUEST
    assert reply["id"] is None


async def test_oversized_batch_is_one_invalid_request(registry: Registry) -> None:
    reply = await send(registry, [request("echo", ["a"], n) for n in range(MAX_BATCH_REQUESTS + 1)])
    assert reply["error"]["code"] == INVALID_REQUEST


async def test_each_invalid_batch_element_gets_its_own_error(registry: Registry) -> None:
    replies = await send(registry, [1, 2, 3])
    assert [reply["error"]["code"] for reply in replies] == [INVALID_REQUEST] * 3


async def test_mixed_batch_keeps_order_and_skips_notifications(
    registry: Registry, calls: Calls
) -> None:
    replies = await send(
        registry,
        [
            request("echo", {"path": "first"}, 1),
            notification("echo", {"path": "notified"}),
            {"foo": "boo"},
            request("nope", None, "5"),
            request("echo", {"count": 2}, 9),
            request("echo", ["last"], 10),
        ],
    )
    assert [reply["id"] for reply in replies] == [1, None, "5", 9, 10]
    assert replies[0]["result"] == {"path": "first", "count": 1}
    assert replies[1]["error"]["code"] == INVALID_REQUEST
    assert replies[2]["error"]["code"] == METHOD_NOT_FOUND
    assert replies[3]["error"] == {"code": INVALID_PARAMS, "message": "path: Field required"}
    assert replies[4]["result"]["path"] == "last"
    assert "notified" in calls.seen


async def test_all_notification_batch_returns_nothing(registry: Registry, calls: Calls) -> None:
    reply = await dispatch(
        registry,
        orjson.dumps([notification("echo", {"path": "a"}), notification("echo", ["b"])]),
    )
    assert reply is None
    assert sorted(calls.seen) == ["a", "b"]


async def test_notification_returns_nothing_even_when_it_fails(registry: Registry) -> None:
    for call in (notification("echo", {"path": "a"}), notification("nope"), notification("boom")):
        assert await dispatch(registry, orjson.dumps(call)) is None


async def test_null_id_is_a_request_not_a_notification(registry: Registry) -> None:
    reply = await send(registry, request("echo", {"path": "a"}, None))
    assert reply == {"jsonrpc": "2.0", "id": None, "result": {"path": "a", "count": 1}}


async def test_method_not_found(registry: Registry) -> None:
    reply = await send(registry, request("no.such.method"))
    assert reply["error"] == {
        "code": METHOD_NOT_FOUND,
        "message": "Method not found",
        "data": {"method": "no.such.method"},
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "path: Field required"),
        ({"path": "a", "count": "5"}, "count: Input should be a valid integer"),
        ({"path": "a", "count": True}, "count: Input should be a valid integer"),
        ({"path": "a", "colour": 1}, "colour: Extra inputs are not permitted"),
        ({"path": 1}, "path: Input should be a valid string"),
    ],
)
async def test_invalid_params_message_names_the_field(
    registry: Registry, params: object, message: str
) -> None:
    reply = await send(registry, request("echo", params))
    assert reply["error"]["code"] == INVALID_PARAMS
    assert reply["error"]["message"] == message


async def test_internal_error_is_logged_never_sent(registry: Registry) -> None:
    with capture_logs() as logs:
        reply = await send(registry, request("boom"))
    assert reply["error"] == {"code": INTERNAL_ERROR, "message": "Internal error"}
    assert "secret" not in orjson.dumps(reply).decode()
    assert any(entry["event"] == "RPC method failed" for entry in logs)


async def test_wrong_result_type_is_an_internal_error(registry: Registry) -> None:
    with capture_logs():
        reply = await send(registry, request("wrong_result"))
    assert reply["error"]["code"] == INTERNAL_ERROR


async def test_handler_rpc_error_reaches_the_caller(registry: Registry) -> None:
    reply = await send(registry, request("refuse"))
    assert reply["error"] == {"code": -32010, "message": "Refused", "data": {"why": "because"}}


async def test_batch_calls_run_concurrently(registry: Registry) -> None:
    replies = await send(registry, [request("rendezvous", None, 1), request("rendezvous", None, 2)])
    assert [reply["result"] for reply in replies] == [{}, {}]


def test_registry_refuses_a_duplicate_name(registry: Registry, calls: Calls) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.add(Method("echo", EchoParams, EchoResult, calls.echo))


def test_method_summary_defaults_to_the_handler_docstring() -> None:
    class Handlers:
        async def documented(self, params: NoParams) -> Empty:
            """First line.

            More.
            """
            return Empty()

    method = Method("documented", NoParams, Empty, Handlers().documented)
    assert method.describe() == "First line."


def test_params_base_is_strict_and_closed() -> None:
    assert EchoParams.model_config.get("strict") is True
    assert EchoParams.model_config.get("extra") == "forbid"
