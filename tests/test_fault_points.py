"""Each fault point where it is wired: what raise, drop and hang do to the actor that passes it."""

from __future__ import annotations

import functools
import random
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from helpers import API_KEY, eventually, make_config, running_stack
from trio_websocket import ConnectionClosed, open_websocket_url

from sigma.app import Endpoints
from sigma.config import HeartbeatConfig, HubConfig, PollerConfig
from sigma.engine.jsonrpc import INTERNAL_ERROR, CallDropped, Registry, dispatch
from sigma.engine.methods import HostMethods
from sigma.engine.server import serve_connection
from sigma.faults import Faults, FaultSpec, InjectedFault
from sigma.health import HealthBoard
from sigma.heartbeat import run_heartbeat
from sigma.hub.loop import run_hub
from sigma.hub.messages import Client, HubMessage, Join, Publish
from sigma.hub.outbox import Outbox
from sigma.poller.actor import run_poller
from sigma.protocol.server_messages import make_event


def spec(point: str, action: str, **trigger: Any) -> FaultSpec:
    return FaultSpec.model_validate({"point": point, "action": action, **trigger})


# --- poller.call --------------------------------------------------------------------------------


def counting_engine(calls: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        call = orjson.loads(request.content)
        calls.append(call["method"])
        body = {"jsonrpc": "2.0", "id": call["id"], "result": {"cpu_usage": 1.0}}
        return httpx.Response(200, content=orjson.dumps(body))

    return httpx.MockTransport(handle)


async def run_mocked_poller(
    faults: Faults, calls: list[str], hub: trio.MemorySendChannel[HubMessage]
) -> None:
    await run_poller(
        PollerConfig(intervals_s={"system.status": 1.0}),
        Endpoints(engine_url="http://engine.test/rpc"),
        hub,
        HealthBoard(),
        transport=counting_engine(calls),
        rng=random.Random(1),
        faults=faults,
    )


async def test_poller_call_drop_skips_that_poll(
    autojump_clock: trio.testing.MockClock, faults: Faults
) -> None:
    calls: list[str] = []
    hub_send, _hub_receive = trio.open_memory_channel[HubMessage](100)
    faults.arm(spec("poller.call", "drop", every=2))
    with trio.move_on_after(9.5):  # polls due at 0, 1, ..., 9: every second one skipped
        await run_mocked_poller(faults, calls, hub_send)
    assert len(calls) == 5
    assert faults.point("poller.call").fired == 5


async def test_poller_call_raise_crashes_the_poller_before_it_calls(
    autojump_clock: trio.testing.MockClock, faults: Faults
) -> None:
    calls: list[str] = []
    hub_send, _hub_receive = trio.open_memory_channel[HubMessage](100)
    faults.arm(spec("poller.call", "raise", every=3))
    with pytest.raises(InjectedFault, match=r"poller\.call"):
        await run_mocked_poller(faults, calls, hub_send)
    assert len(calls) == 2


# --- heartbeat.tick -----------------------------------------------------------------------------


async def test_heartbeat_tick_drop_skips_beats_and_raise_crashes(
    autojump_clock: trio.testing.MockClock, faults: Faults
) -> None:
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](100)
    faults.arm(spec("heartbeat.tick", "drop", every=2))
    config = HeartbeatConfig(interval_s=1.0)
    with trio.move_on_after(5.5):  # ticks at 0..5: the 2nd, 4th and 6th are dropped
        await run_heartbeat(config, hub_send, faults=faults)
    beats = [message.data["beat"] for message in drain(hub_receive)]  # type: ignore[union-attr]
    assert beats == [1, 2, 3]
    faults.arm(spec("heartbeat.tick", "raise", once=True))
    with pytest.raises(InjectedFault):
        await run_heartbeat(config, hub_send, faults=faults)


def drain(receive: trio.MemoryReceiveChannel[HubMessage]) -> list[HubMessage]:
    messages = []
    while True:
        try:
            messages.append(receive.receive_nowait())
        except trio.WouldBlock:
            return messages


# --- hub.publish --------------------------------------------------------------------------------


async def test_hub_publish_raise_loses_no_message(faults: Faults) -> None:
    """The point is passed before a message is taken: the next incarnation gets it."""
    hub_send, hub_receive = trio.open_memory_channel[HubMessage](16)
    outbox = Outbox(64)
    hub = functools.partial(run_hub, heartbeat_interval_s=1.0, faults=faults)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub, hub_receive, HubConfig())
        await hub_send.send(Join(Client("a", outbox)))
        await eventually(lambda: len(outbox) == 1)  # the welcome
        faults.arm(spec("hub.publish", "raise", once=True))
        nursery.cancel_scope.cancel()
    # The next loop turn of a fresh incarnation raises before it takes anything.
    await hub_send.send(Publish((make_event("notification", {"n": 1}),)))
    with pytest.raises(InjectedFault):
        await run_hub(hub_receive, HubConfig(), heartbeat_interval_s=1.0, faults=faults)
    assert hub_receive.statistics().current_buffer_used == 1
    second = Outbox(64)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub, hub_receive, HubConfig())
        await hub_send.send(Join(Client("b", second)))
        await eventually(lambda: len(second) == 1)
        nursery.cancel_scope.cancel()
    assert hub_receive.statistics().current_buffer_used == 0


async def test_hub_publish_refuses_drop() -> None:
    with pytest.raises(ValueError, match=r"drop is not supported at hub\.publish"):
        spec("hub.publish", "drop")


# --- sender.write, through a real gateway --------------------------------------------------------


# `drop` cuts the connection (1006: no close frame); after `raise` the crashed session still
# closes properly, with 1011 (internal error).
@pytest.mark.parametrize(("action", "code"), [("drop", 1006), ("raise", 1011)])
async def test_sender_write_cuts_that_client_only(action: str, code: int, faults: Faults) -> None:
    async with running_stack(make_config(), faults=faults) as stack:
        async with (
            open_websocket_url(stack.ws_url) as victim,
            open_websocket_url(stack.ws_url) as bystander,
        ):
            for ws in (victim, bystander):
                await ws.get_message()  # the welcome
            await eventually(lambda: len(stack.hub.state.clients) == 2)
            # Only the next write of the victim's sender passes the armed point.
            with faults.armed(spec("sender.write", action, once=True)) as point:
                await victim.send_message('{"action": "ping"}')
                with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                    await victim.get_message()
            assert point.fired == 1
            assert closed.value.reason.code == code
            await stack.publish({"type": "notification", "data": {}})
            assert orjson.loads(await bystander.get_message())["type"] == "notification"
        await eventually(lambda: stack.sessions.count_children().active == 0)


# --- connection.try_write, inside the hub's own write ------------------------------------------


async def test_a_failing_direct_write_costs_that_client_only(faults: Faults) -> None:
    """An exception inside the hub's write to one idle client closes that client with 1011;
    the hub is not restarted and every other client keeps contiguous `seq`."""
    async with running_stack(make_config(), faults=faults) as stack:
        hub = stack.hub
        async with (
            open_websocket_url(stack.ws_url) as victim,
            open_websocket_url(stack.ws_url) as first,
            open_websocket_url(stack.ws_url) as second,
        ):
            for ws in (victim, first, second):
                await ws.get_message()  # the welcome
            await eventually(lambda: len(hub.state.clients) == 3)
            # The victim joined first, so the hub writes to it first.
            with faults.armed(spec("connection.try_write", "raise", once=True)) as point:
                await stack.publish({"type": "notification", "data": {"n": 1}})
            assert point.fired == 1
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                await victim.get_message()
            assert (closed.value.reason.code, closed.value.reason.reason) == (
                1011,
                "internal error",
            )
            for n in range(2, 6):
                await stack.publish({"type": "notification", "data": {"n": n}})
            for ws in (first, second):
                seqs = [orjson.loads(await ws.get_message())["seq"] for _ in range(5)]
                assert seqs == [1, 2, 3, 4, 5]
            assert stack.hub is hub and len(hub.state.clients) == 2
            assert hub.state.last_seq == 5


async def test_a_dropped_direct_write_leaves_the_event_to_the_sender(faults: Faults) -> None:
    async with (
        running_stack(make_config(), faults=faults) as stack,
        open_websocket_url(stack.ws_url) as ws,
    ):
        await ws.get_message()
        await eventually(lambda: len(stack.hub.state.clients) == 1)
        with faults.armed(spec("connection.try_write", "drop", once=True)) as point:
            await stack.publish({"type": "notification", "data": {}})
            assert orjson.loads(await ws.get_message())["seq"] == 1
        assert point.fired == 1


def test_connection_try_write_refuses_hang_and_delay() -> None:
    for action in ("hang", "delay"):
        with pytest.raises(ValueError, match=r"not supported at connection\.try_write"):
            spec("connection.try_write", action)


# --- engine.method ------------------------------------------------------------------------------


def host_registry(tmp_path: Any) -> Registry:
    registry = Registry()
    HostMethods(data_root=tmp_path, storage_paths=()).register(registry)
    return registry


async def test_engine_method_raise_is_an_internal_error_without_a_trace(
    tmp_path: Any, faults: Faults
) -> None:
    point = faults.point("engine.method")
    faults.arm(spec("engine.method", "raise", once=True))
    call = {"jsonrpc": "2.0", "id": 7, "method": "system.status"}
    reply = orjson.loads(await dispatch(host_registry(tmp_path), orjson.dumps(call), fault=point))
    assert reply == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": INTERNAL_ERROR, "message": "Internal error"},
    }
    again = orjson.loads(await dispatch(host_registry(tmp_path), orjson.dumps(call), fault=point))
    assert "result" in again


async def test_engine_method_drop_leaves_the_call_unanswered(tmp_path: Any, faults: Faults) -> None:
    point = faults.point("engine.method")
    registry = host_registry(tmp_path)
    faults.arm(spec("engine.method", "drop", every=2))
    calls = [{"jsonrpc": "2.0", "id": n, "method": "system.status"} for n in range(4)]
    batch = orjson.loads(await dispatch(registry, orjson.dumps(calls), fault=point) or b"")
    assert len(batch) == 2  # two of the four calls were dropped
    faults.arm(spec("engine.method", "drop"))
    with pytest.raises(CallDropped):
        await dispatch(registry, orjson.dumps(calls[0]), fault=point)
    # Over HTTP, the engine closes the connection without a response.
    client, server = trio.testing.memory_stream_pair()
    request = orjson.dumps(calls[0])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve_connection, registry, server, fault=point))
        await client.send_all(
            b"POST /rpc HTTP/1.1\r\nhost: engine\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(request)}\r\n\r\n".encode()
            + request
        )
        with trio.fail_after(5):
            assert await client.receive_some() == b""


async def test_a_failing_ping_costs_that_client_only(faults: Faults) -> None:
    """The keep-alive sweep serves every session: a write that raises while one client is
    pinged closes that client with 1011, and the gateway goes on serving the others."""
    config = make_config(heartbeat={"ping_interval_s": 0.2, "ping_timeout_s": 5.0})
    async with running_stack(config, faults=faults) as stack:
        async with open_websocket_url(stack.ws_url) as victim:
            await victim.get_message()  # the welcome
            await eventually(lambda: len(stack.hub.state.clients) == 1)
            with (
                faults.armed(spec("connection.try_write", "raise", once=True)) as point,
                pytest.raises(ConnectionClosed) as closed,
                trio.fail_after(5),
            ):
                await victim.get_message()
            assert point.fired == 1
            assert (closed.value.reason.code, closed.value.reason.reason) == (
                1011,
                "internal error",
            )
        async with open_websocket_url(stack.ws_url) as newcomer:
            await newcomer.get_message()
            await stack.publish({"type": "notification", "data": {}})
            assert orjson.loads(await newcomer.get_message())["seq"] == 1


async def test_a_publish_answered_503_is_never_broadcast_later(faults: Faults) -> None:
    """A publish the API gave up on (the hub too slow to number it) is answered 503 "not
    published"; when the hub gets to it afterwards, it is skipped, not broadcast."""
    config = make_config(broker={"publish_timeout_s": 0.2})
    async with (
        running_stack(config, faults=faults) as stack,
        open_websocket_url(stack.ws_url) as ws,
    ):
        await ws.get_message()  # the welcome
        await eventually(lambda: len(stack.hub.state.clients) == 1)
        with faults.armed(spec("hub.publish", "delay", delay_s=2.0, once=True)):
            # The hub, waiting on its inbox, takes this one at once, then stops in the fault.
            await stack.publish({"type": "notification", "data": {"n": "first"}})
            refused = await stack.http.post(
                "/api/publish",
                content=orjson.dumps({"type": "notification", "data": {"n": "withdrawn"}}),
                headers={"authorization": f"Bearer {API_KEY}"},
            )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "broker_unavailable"
        # Sent while the hub is still held (2 s > the 1.2 s the API waited), answered once the
        # hub goes on: by then it has passed over the withdrawn one.
        await stack.publish({"type": "notification", "data": {"n": "third"}})
        received = [orjson.loads(await ws.get_message()) for _ in range(2)]
        assert [(m["seq"], m["data"]["n"]) for m in received] == [(1, "first"), (2, "third")]
        assert stack.hub.state.last_seq == 2
