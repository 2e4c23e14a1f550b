"""The pytest plugin (entry point `pytest11: sigma`): fixtures for fault-injection tests.

Async fixtures need pytest-trio (its `trio_mode`, or `@pytest.mark.trio` on the tests).

- `sigma_config`: the tree's `Config`, `test_config()` with `sigma_config_overrides`;
- `sigma_config_overrides`: `{}`, or the keywords of `@pytest.mark.sigma_config(hub={...})`
  (override the fixture itself for a whole module or conftest);
- `sigma_faults`: a fresh `Faults` registry for the in-process tree, disarmed after the test;
- `sigma_tree`: a `SigmaTree`, the whole tree in-process on free ports (`sigma.testing.tree`);
- `sigma_server`: a `SigmaProcess`, `sigma serve` as a subprocess, faults armed over HTTP;
- `sigma_client`: a `sigma.client` stream connected to `sigma_tree`;
- `sigma_ledger`: a fresh `DeliveryLedger`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sigma.client import Stream
from sigma.config.loading import Config
from sigma.faults import Faults
from sigma.testing.ledger import DeliveryLedger
from sigma.testing.process import SigmaProcess, run_process
from sigma.testing.tree import SigmaTree, run_tree, test_config

MARKER = "sigma_config"


def pytest_configure(config: pytest.Config) -> None:
    """Register the `sigma_config` marker."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**sections): configuration overrides for the sigma_tree and sigma_server "
        "fixtures, one keyword per section (hub={'queue_size': 8})",
    )


@pytest.fixture
def sigma_config_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Section overrides for the tree: the `sigma_config` markers' keywords, nearest last."""
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        overrides.update(marker.kwargs)
    return overrides


@pytest.fixture
def sigma_config(tmp_path: Path, sigma_config_overrides: dict[str, Any]) -> Config:
    """The in-process tree's configuration (`sigma.testing.tree.test_config`)."""
    return test_config(tmp_path / "sigma-data", **sigma_config_overrides)


@pytest.fixture
def sigma_faults() -> Iterator[Faults]:
    """The in-process tree's fault registry, every point disarmed again after the test."""
    registry = Faults()
    yield registry
    registry.clear()


@pytest.fixture
async def sigma_tree(sigma_config: Config, sigma_faults: Faults) -> AsyncIterator[SigmaTree]:
    """The whole Sigma tree running in this process; stopped after the test."""
    async with run_tree(sigma_config, faults=sigma_faults) as tree:
        yield tree


@pytest.fixture
async def sigma_server(
    tmp_path: Path, sigma_config_overrides: dict[str, Any]
) -> AsyncIterator[SigmaProcess]:
    """`sigma serve` as a subprocess; stopped (SIGTERM, then SIGKILL) after the test."""
    async with run_process(tmp_path / "sigma-server", **sigma_config_overrides) as server:
        yield server


@pytest.fixture
async def sigma_client(sigma_tree: SigmaTree) -> AsyncIterator[Stream]:
    """A stream of every event of `sigma_tree`, with `Connected`/`Disconnected` items."""
    async with sigma_tree.connect(connection_items=True) as stream:
        yield stream


@pytest.fixture
def sigma_ledger() -> DeliveryLedger:
    """An empty `DeliveryLedger`."""
    return DeliveryLedger()
