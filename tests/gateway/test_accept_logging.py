"""The per-connection debug lines: skipped cheaply at `warning`, still written at `debug`."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog
import trio
from helpers import eventually, running_stack
from trio_websocket import open_websocket_url

from sigma.log import configure_logging
from sigma.supervision.observe import log_supervision_event, supervision_debug_enabled
from sigma.supervision.spec import ChildExited, ChildStarted


def logging_at(level: str) -> Iterator[io.StringIO]:
    previous = structlog.get_config()
    output = io.StringIO()
    configure_logging(level, "console", stream=output)
    try:
        yield output
    finally:
        structlog.configure(**previous)


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    yield from logging_at("debug")


@pytest.fixture
def warning_log() -> Iterator[io.StringIO]:
    yield from logging_at("warning")


async def connect_and_leave() -> tuple[int, str]:
    async with running_stack() as stack:
        async with open_websocket_url(stack.ws_url) as ws:
            with trio.fail_after(5):
                await ws.get_message()  # the welcome: joined
        await eventually(lambda: not stack.hub.state.clients)
        await eventually(lambda: stack.sessions.child_count() == 0)
        return len(stack.hub.state.clients), stack.hub.state.epoch


async def test_join_and_close_are_logged_at_debug(debug_log: io.StringIO) -> None:
    await connect_and_leave()
    text = debug_log.getvalue()
    assert "DBG Client joined" in text
    assert "DBG Client session closed" in text


async def test_join_and_close_are_not_logged_at_warning(warning_log: io.StringIO) -> None:
    clients, _ = await connect_and_leave()
    assert clients == 0
    assert "Client joined" not in warning_log.getvalue()
    assert "Client session closed" not in warning_log.getvalue()


def test_supervision_debug_lines_follow_the_level_read(debug_log: io.StringIO) -> None:
    assert supervision_debug_enabled()
    started = ChildStarted(supervisor="sessions", at=0.0, child_id="c1")
    exited = ChildExited(
        supervisor="sessions", at=1.0, child_id="c1", reason="normal", abnormal=False
    )
    log_supervision_event(started, debug=False)
    log_supervision_event(exited, debug=False)
    assert debug_log.getvalue() == ""
    log_supervision_event(started, debug=supervision_debug_enabled())
    log_supervision_event(exited, debug=supervision_debug_enabled())
    lines = debug_log.getvalue().splitlines()
    assert len(lines) == 2
    assert " DBG Child started supervisor=sessions child=c1" in lines[0]
    assert " DBG Child exited " in lines[1]


def test_crashes_are_logged_whatever_the_debug_flag(warning_log: io.StringIO) -> None:
    assert not supervision_debug_enabled()
    crashed = ChildExited(
        supervisor="sessions", at=1.0, child_id="c1", reason="boom", abnormal=True
    )
    log_supervision_event(crashed, debug=False)
    assert "WRN Child crashed" in warning_log.getvalue()
