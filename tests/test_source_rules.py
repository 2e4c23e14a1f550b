"""Rules about the source itself: no reaching into other libraries' private attributes, and a
server that does not load the WebSocket client library.

The private-attribute rule, by `ast` over `sigma/`, `tests/` and `benchmarks/`: an attribute
access `x._name` (or `getattr(x, "_name")`) is allowed only
- on `self`, `cls` or `super()`, or
- when `_name` is a private name of Sigma's own (assigned, declared in `__slots__` or defined
  somewhere in these folders) that no library Sigma uses defines too: such a name can only be
  one of our objects' (a test may look at a Sigma object's insides), or
- for the few underscore names the standard library documents as public
  (`os._exit`, a named tuple's `_replace`, `_fields`, `_asdict`, `_make`).
So `ws._wsproto`, `ws._stream_lock` and `stream._inner` are caught (only trio-websocket and trio
define them), and so is `ws._stream` even though a Sigma class has a `_stream` too: a name both
sides define is never taken for ours.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("sigma", "tests", "benchmarks")
LIBRARIES = (
    "coredis",
    "h11",
    "httpx",
    "hypothesis",
    "orjson",
    "psutil",
    "pydantic",
    "structlog",
    "trio",
    "trio_websocket",
    "websockets",
    "wsproto",
)
DOCUMENTED_UNDERSCORE_NAMES = frozenset({"_exit", "_replace", "_fields", "_asdict", "_make"})
OWN_OBJECTS = frozenset({"self", "cls"})


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_names(paths: Iterable[Path]) -> set[str]:
    """Every private name the files define: assigned, declared in `__slots__`, or defined."""
    names: set[str] = set()
    for path in paths:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # `__slots__` entries, `getattr` names
    return {name for name in names if name.isidentifier() and is_private(name)}


def python_files(folders: Iterable[Path]) -> Iterator[Path]:
    for folder in folders:
        yield from folder.rglob("*.py")


@cache
def foreign_private_names() -> frozenset[str]:
    folders: list[Path] = []
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        if spec is not None and spec.submodule_search_locations:
            folders += [Path(location) for location in spec.submodule_search_locations]
    return frozenset(private_names(python_files(folders)))


@cache
def own_private_names() -> frozenset[str]:
    return frozenset(private_names(python_files(ROOT / folder for folder in SCANNED)))


def private_accesses(tree: ast.AST) -> Iterator[tuple[int, ast.expr, str]]:
    """`(line, object, name)` for each `x._name` and `getattr(x, "_name", ...)`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            yield node.lineno, node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            yield node.lineno, node.args[0], node.args[1].value


def is_own_object(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in OWN_OBJECTS
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Each access to another library's private attribute in `source`, as `file:line: code`."""
    ours = own_private_names() - foreign_private_names()
    found = []
    for line, value, name in private_accesses(ast.parse(source)):
        if is_own_object(value) or name in DOCUMENTED_UNDERSCORE_NAMES or name in ours:
            continue
        found.append(f"{filename}:{line}: {ast.unparse(value)}.{name}")
    return found


def test_no_code_reaches_into_another_librarys_private_attributes() -> None:
    found = []
    for path in sorted(python_files(ROOT / folder for folder in SCANNED)):
        found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "ws._wsproto.send(event)",
        "ws._stream_lock = lock",
        "data = stream._inner",
        "await ws._stream.send_all(b'')",
        "getattr(ws, '_stream')",
        "self._ws._wsproto",
        "frames = wsproto.frame_protocol._XorMaskerSimple",
    ],
)
def test_the_rule_catches_private_attributes_of_other_libraries(source: str) -> None:
    assert violations(source), source


@pytest.mark.parametrize(
    "source",
    [
        "self._stream",
        "cls._instances",
        "super()._close()",
        "os._exit(1)",
        "parts._replace(query='')",
        "point._fires()",  # a Sigma object's private method: only Sigma defines `_fires`
    ],
)
def test_the_rule_allows_our_own_objects_and_documented_names(source: str) -> None:
    assert violations(source) == []


def test_no_test_uses_wsproto_frame_protocol() -> None:
    """`wsproto.frame_protocol` is not wsproto's public API."""
    users = [
        str(path.relative_to(ROOT))
        for path in python_files(ROOT / folder for folder in SCANNED)
        if "frame_protocol" in path.read_text(encoding="utf-8")
        and path.name != "test_source_rules.py"
    ]
    assert users == []


def test_the_server_does_not_load_trio_websocket() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, sigma.app; print('trio_websocket' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert loaded.stdout.strip() == "False", loaded.stderr
