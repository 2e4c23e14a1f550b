"""The docs' examples run as written: docs/client.md against a live gateway, docs/testing.md's
test files under pytest (`pytester`).

A block fenced exactly ```` ```python ```` is an example to run; ```` ```python fragment ```` is
not (it leans on the reader's own code).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio

from sigma.testing import run_tree, test_config

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCUMENTED_URL = "127.0.0.1:12080"
EXAMPLE_TIMEOUT_S = 60.0


def python_blocks(name: str) -> list[str]:
    """The runnable Python blocks of `docs/<name>`, in order."""
    text = (DOCS / name).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_the_docs_have_examples() -> None:
    assert len(python_blocks("client.md")) >= 5
    assert len(python_blocks("testing.md")) >= 4


async def test_every_client_example_runs_against_a_live_gateway(tmp_path: Path) -> None:
    blocks = python_blocks("client.md")
    async with run_tree(test_config(tmp_path)) as tree:
        address = tree.ws_url.removeprefix("ws://").removesuffix("/ws")
        for number, block in enumerate(blocks, 1):
            code = block.replace(DOCUMENTED_URL, address)
            with trio.fail_after(EXAMPLE_TIMEOUT_S):
                done = await trio.run_process(
                    [sys.executable, "-c", code],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            shown = f"example {number} of docs/client.md:\n{block}\n{done.stderr.decode()[-3000:]}"
            assert done.returncode == 0, shown
            assert done.stdout.strip(), shown


def test_every_testing_example_passes_under_pytest(pytester: pytest.Pytester) -> None:
    ini = re.search(r"^```ini\n(.*?)^```$", (DOCS / "testing.md").read_text(), re.S | re.M)
    assert ini is not None
    pytester.makeini(ini.group(1))
    files = {}
    for block in python_blocks("testing.md"):
        first = block.splitlines()[0]
        assert first.startswith("# test_") and first.endswith(".py"), first
        files[first.removeprefix("# ").removesuffix(".py")] = block
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(
        passed=len(re.findall(r"^async def test_", "\n".join(files.values()), re.M))
    )
