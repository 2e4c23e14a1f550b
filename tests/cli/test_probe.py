"""`sigma check`: the verdict rules (sync), the wire edge, and the probe against real sockets."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
from helpers import Stack, make_config, running_stack
from trio_websocket import WebSocketRequest, serve_websocket

from sigma.cli.main import main
from sigma.cli.probe import check_parser, observe
from sigma.cli.probe_verdict import (
    BrokenContract,
    HeartbeatLimits,
    HeartbeatSeen,
    Observation,
    Status,
    Unreachable,
    Welcomed,
    assess,
    number,
    perf,
)
from sigma.client.connection import (
    GatewayProtocolError,
    check_ws_url,
    decode_server_frame,
    read_welcome,
    resume_url,
)
from sigma.config import HeartbeatConfig
from sigma.heartbeat import run_heartbeat
from sigma.protocol.replies import WelcomeFields, welcome
from sigma.protocol.server_messages import encode

LIMITS = HeartbeatLimits(30.0)
FAST_HEARTBEAT = HeartbeatConfig(interval_s=0.2, ping_interval_s=3600.0)

# --- the verdict: pure rules ---------------------------------------------------------------------


def test_limits_default_to_twice_the_interval_unless_overridden() -> None:
    assert HeartbeatLimits.for_interval(15.0, None) == HeartbeatLimits(30.0)
    assert HeartbeatLimits.for_interval(15.0, 5.0) == HeartbeatLimits(5.0)
    assert HeartbeatLimits(30.0).critical_after_s == 60.0


@pytest.mark.parametrize(
    ("age_s", "status"),
    [
        (0.0, Status.OK),
        (30.0, Status.OK),
        (30.001, Status.WARNING),
        (60.0, Status.WARNING),
        (60.001, Status.CRITICAL),
    ],
)
def test_age_thresholds(age_s: float, status: Status) -> None:
    assert LIMITS.classify(age_s) is status


def test_healthy_heartbeat_is_ok_with_nagios_perfdata() -> None:
    beat = HeartbeatSeen(seq=12, waited_s=0.4, lag_s=0.002, clients=3)
    verdict = assess(Welcomed(LIMITS, connect_s=0.003, waited_s=0.4, heartbeat=beat))
    assert verdict.status is Status.OK
    assert verdict.line() == (
        "SIGMA OK - heartbeat seq=12 age=0.4s clients=3"
        " | heartbeat_age=0.4s;30;60;0 clients=3;;;0 connect_time=0.003s;;;0"
    )


def test_age_is_the_larger_of_wait_and_lag() -> None:
    beat = HeartbeatSeen(seq=5, waited_s=0.1, lag_s=45.0)
    assert beat.age_s == 45.0
    verdict = assess(Welcomed(LIMITS, connect_s=0.01, waited_s=0.1, heartbeat=beat))
    assert verdict.status is Status.WARNING
    assert verdict.line().startswith("SIGMA WARNING - heartbeat late seq=5 age=45.0s (max age 30s)")
    stale = HeartbeatSeen(seq=5, waited_s=61.0, lag_s=0.0)
    verdict = assess(Welcomed(LIMITS, connect_s=0.01, waited_s=61.0, heartbeat=stale))
    assert verdict.status is Status.CRITICAL
    assert "heartbeat stale" in verdict.summary


def test_no_heartbeat_is_critical_once_due() -> None:
    verdict = assess(Welcomed(LIMITS, connect_s=0.01, waited_s=60.0))
    assert verdict.status is Status.CRITICAL
    assert verdict.line() == (
        "SIGMA CRITICAL - no heartbeat within 60.0s (max age 30s)"
        " | heartbeat_age=U;30;60;0 connect_time=0.01s;;;0"
    )
    closed = assess(Welcomed(LIMITS, connect_s=0.01, waited_s=1.0, interrupted="connection closed"))
    assert (closed.status, closed.summary) == (
        Status.CRITICAL,
        "no heartbeat: connection closed",
    )
    early = assess(Welcomed(LIMITS, connect_s=0.01, waited_s=10.0))
    assert early.status is Status.UNKNOWN


def test_unreachable_and_broken_contract_are_critical() -> None:
    down = assess(Unreachable("cannot connect: connection refused"))
    assert down.line() == "SIGMA CRITICAL - gateway unavailable: cannot connect: connection refused"
    broken = assess(BrokenContract("malformed welcome: epoch: Field required"))
    assert broken.status is Status.CRITICAL
    assert (
        broken.line() == "SIGMA CRITICAL - protocol error: malformed welcome: epoch: Field required"
    )


def test_perfdata_formatting() -> None:
    assert perf("clients", 3) == "clients=3;;;0"
    assert perf("heartbeat_age", None, "s", 0.5, 1.0) == "heartbeat_age=U;0.5;1;0"
    assert (number(30.0), number(0.4125), number(0.0), number(2.25, 1)) == (
        "30",
        "0.412",
        "0",
        "2.2",
    )


# --- the wire edge -------------------------------------------------------------------------------


def a_welcome(**changes: Any) -> dict[str, Any]:
    frame = orjson.loads(
        encode(
            welcome(
                WelcomeFields(
                    client_id="c1",
                    subscriptions=frozenset({"heartbeat"}),
                    last_seq=4,
                    epoch="e1",
                    heartbeat_interval_s=15.0,
                    recovered=None,
                )
            )
        )
    )
    frame["data"].update(changes)
    return frame  # type: ignore[no-any-return]


def test_welcome_is_read_from_the_real_server_model() -> None:
    parsed = read_welcome(decode_server_frame(orjson.dumps(a_welcome()).decode()))
    assert (parsed.client_id, parsed.last_seq, parsed.epoch) == ("c1", 4, "e1")
    assert parsed.heartbeat_interval == 15.0 and parsed.recovered is None
    assert parsed.client_count is None  # not given: a server before the count, or none known
    counted = read_welcome(decode_server_frame(orjson.dumps(a_welcome(client_count=3)).decode()))
    assert counted.client_count == 3


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"type": "notification", "data": {}}', "frame has no timestamp, seq"),
        (a_welcome(epoch=None), "malformed welcome: epoch"),
        (a_welcome(last_seq="4"), "malformed welcome: last_seq"),
        (a_welcome(heartbeat_interval=0), "malformed welcome: heartbeat_interval"),
        (a_welcome(client_count=0), "malformed welcome: client_count"),
        (a_welcome(kind="hello"), "not a welcome"),
        ({**a_welcome(), "timestamp": "2026-01-28T12:50:32"}, "no UTC offset"),
        ({**a_welcome(), "seq": 3}, "not a welcome"),
    ],
)
def test_malformed_welcomes_are_protocol_errors(frame: str | dict[str, Any], problem: str) -> None:
    text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
    with pytest.raises(GatewayProtocolError, match=problem):
        read_welcome(decode_server_frame(text))


def test_urls() -> None:
    assert (
        resume_url("ws://h:1/ws?token=t&since=3", 7, "e2") == "ws://h:1/ws?token=t&since=7&epoch=e2"
    )
    assert check_ws_url("wss://h/ws") == "wss://h/ws"
    for bad in ("http://h/ws", "ws:///ws", "ws://h:port/ws"):
        with pytest.raises(ValueError):
            check_ws_url(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "http://h/ws"], "not a ws:// or wss:// URL"),
        (["--timeout", "0"], "must be a positive number"),
        (["--max-heartbeat-age", "soon"], "not a number of seconds"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_unknown(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *argv]) == 3
    out = capsys.readouterr().out
    assert out.startswith("SIGMA UNKNOWN - usage: ") and message in out
    assert out.count("\n") == 1


def test_help_documents_the_thresholds() -> None:
    text = " ".join(check_parser().format_help().split())
    assert "WARNING (1): a heartbeat arrived late: A < age <= 2A" in text
    assert "--max-heartbeat-age" in text and "no heartbeat within 2A" in text


# --- against real sockets ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def beating_stack(**sections: Any) -> AsyncIterator[Stack]:
    """A stack with the real heartbeat actor sending every 0.2 s."""
    async with running_stack(make_config(**sections)) as stack, trio.open_nursery() as nursery:
        await nursery.start(run_heartbeat, FAST_HEARTBEAT, stack.hub_send)
        yield stack
        nursery.cancel_scope.cancel()


def status_line(out: str) -> str:
    """The probe's one line; the server running in this process may log around it."""
    [line] = [line for line in out.splitlines() if line.startswith("SIGMA ")]
    return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthy_gateway_is_ok() -> None:
    async with beating_stack() as stack:
        observation = await observe(stack.ws_url, timeout_s=5.0)
    assert isinstance(observation, Welcomed) and observation.heartbeat is not None
    assert observation.limits == HeartbeatLimits(30.0)  # the welcome's interval, 15 s, twice
    assert observation.heartbeat.clients == 1
    verdict = assess(observation)
    assert verdict.status is Status.OK, verdict.line()


async def test_healthy_gateway_through_the_cli_entry(capsys: pytest.CaptureFixture[str]) -> None:
    async with beating_stack() as stack:
        status = await trio.to_thread.run_sync(main, ["check", "--url", stack.ws_url])
    line = status_line(capsys.readouterr().out)
    assert status == 0, line
    assert line.startswith("SIGMA OK - heartbeat seq=") and "| heartbeat_age=" in line


async def test_healthy_gateway_through_the_sigma_process() -> None:
    async with beating_stack() as stack:
        done = await trio.run_process(
            [sys.executable, "-m", "sigma", "check", "--url", stack.ws_url, "--timeout", "5"],
            capture_stdout=True,
            check=False,
        )
    line = done.stdout.decode()
    assert done.returncode == 0, line
    assert line.startswith("SIGMA OK - heartbeat seq=") and line.count("\n") == 1


async def test_gateway_down_is_critical(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    status = await trio.to_thread.run_sync(main, ["check", "--url", url, "--timeout", "2"])
    assert status == 2
    assert capsys.readouterr().out == (
        "SIGMA CRITICAL - gateway unavailable: cannot connect: connection refused\n"
    )


async def test_stopped_heartbeats_are_critical_within_twice_the_max_age() -> None:
    async with running_stack(make_config(heartbeat=FAST_HEARTBEAT)) as stack:
        started = trio.current_time()
        observation = await observe(stack.ws_url, timeout_s=5.0)
        elapsed_s = trio.current_time() - started
    verdict = assess(observation)
    assert verdict.status is Status.CRITICAL
    assert verdict.summary.startswith("no heartbeat within 0.8s (max age 0.4s)")
    assert 0.8 <= elapsed_s < 2.0


async def test_max_heartbeat_age_overrides_the_interval(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_stack() as stack:  # heartbeat_interval 15 s, and no heartbeat actor
        argv = ["check", "--url", stack.ws_url, "--max-heartbeat-age", "0.1"]
        status = await trio.to_thread.run_sync(main, argv)
    assert status == 2
    line = status_line(capsys.readouterr().out)
    assert line.startswith("SIGMA CRITICAL - no heartbeat within 0.2s (max age 0.1s) | ")


async def test_rejected_upgrade_is_critical() -> None:
    async with running_stack() as stack:
        observation = await observe(stack.ws_url.replace("/ws", "/nope"), timeout_s=5.0)
    assert observation == Unreachable("upgrade rejected with HTTP 404: no route for /nope")


async def test_handshake_timeout_is_critical() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # listens, never answers
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        observation = await observe(f"ws://127.0.0.1:{port}/ws", timeout_s=0.3)
    assert observation == Unreachable("no handshake within 0.3s")


async def fake_gateway(
    frames: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A WebSocket server that sends `frames` to every client, then closes with 4000."""

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for frame in frames:
            await ws.send_message(frame.decode())
        await ws.aclose(4000, "bye")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        task_status.started(server.port)


async def observe_fake(frames: list[bytes]) -> Observation:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake_gateway, frames)
        observation = await observe(f"ws://127.0.0.1:{port}/ws", timeout_s=5.0, max_age_s=5.0)
        nursery.cancel_scope.cancel()
    return observation


async def test_malformed_welcome_is_critical() -> None:
    observation = await observe_fake([orjson.dumps(a_welcome(epoch=""))])
    assert isinstance(observation, BrokenContract)
    assert observation.reason.startswith("malformed welcome: epoch: String should have at least")


async def test_close_or_malformed_frame_before_a_heartbeat_is_critical() -> None:
    closed = assess(await observe_fake([orjson.dumps(a_welcome())]))
    assert (closed.status, closed.summary) == (
        Status.CRITICAL,
        "no heartbeat: connection closed with code 4000 (bye)",
    )
    garbled = assess(await observe_fake([orjson.dumps(a_welcome()), b"{oops"]))
    assert garbled.status is Status.CRITICAL
    assert garbled.summary.startswith("no heartbeat: malformed frame: frame is not valid JSON")
