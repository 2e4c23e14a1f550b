"""Shared test harness: a real hub, sessions supervisor and gateway on 127.0.0.1.

Fault injection: the `faults` fixture is a fresh `Faults` registry, disarmed again after the
test; hand it to `running_stack(faults=...)` (or `sigma.app.serve(config, faults=...)`) and arm
points with `faults.arm(spec)` or `with faults.armed(spec): ...`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import RedisServer

from sigma.faults import Faults

RELIABILITY_REPORT_ENV = "SIGMA_RELIABILITY_REPORT"
DEFAULT_RELIABILITY_REPORT = "/tmp/sigma-reliability.json"
_figures_key = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def reliability_figures(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Where a reliability test records its figures: one dict per scenario.

    They are printed in the terminal summary and written as JSON to $SIGMA_RELIABILITY_REPORT
    (default /tmp/sigma-reliability.json) at the end of the run.
    """
    return request.config.stash.setdefault(_figures_key, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the reliability figures recorded during the run, and write them to a file."""
    figures = config.stash.get(_figures_key, [])
    if not figures:
        return
    path = os.environ.get(RELIABILITY_REPORT_ENV, DEFAULT_RELIABILITY_REPORT)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(figures, out, indent=2)
    terminalreporter.section("reliability figures")
    for row in figures:
        terminalreporter.line(json.dumps(row))
    terminalreporter.line(f"(also in {path})")


@pytest.fixture
def start_redis(tmp_path: Any) -> Iterator[Any]:
    """Start `redis-server`s of the test's own: `start_redis(appendonly=False)` gives a running
    `RedisServer` on a free port with its files under tmp_path; each is stopped by its pid at
    the end. Tests using it carry `needs_binary("redis-server", package="redis-server")`."""
    servers: list[RedisServer] = []

    def start(*, appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", appendonly=appendonly)
        servers.append(server)
        server.launch()
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(start_redis: Any) -> RedisServer:
    """One running `redis-server` without persistence (see `start_redis`)."""
    server: RedisServer = start_redis()
    return server


@pytest.fixture
def faults() -> Iterator[Faults]:
    """A fault registry for one test, every point disarmed again afterwards."""
    registry = Faults()
    yield registry
    registry.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under `CI=true` a skip is a failure: `.ci/run` installs everything a test needs."""
    report = yield
    if report.skipped and os.environ.get("CI") == "true":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, where nothing may be missing: {reason}"
    return report
