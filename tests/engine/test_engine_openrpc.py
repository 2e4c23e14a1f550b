"""`rpc.discover`: the OpenRPC document is generated from the registry's models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sigma.config import EngineConfig
from sigma.engine.compression_methods import SubmitParams
from sigma.engine.jobs import JobBook, JobView
from sigma.engine.jsonrpc import Method, Registry
from sigma.engine.models import NoParams, Params, Result
from sigma.engine.openrpc import OPENRPC_VERSION, build_document
from sigma.engine.paths import resolve_data_dir
from sigma.engine.server import build_registry
from sigma.engine.workers import WorkerPool


@pytest.fixture
async def registry(tmp_path: Path) -> Registry:
    data_root = resolve_data_dir(tmp_path / "data")
    pool = WorkerPool(worker_count=1, data_root=data_root, book=JobBook(10))
    return build_registry(pool, EngineConfig(data_dir=data_root))


def resolve_refs(schema: Any, components: dict[str, Any]) -> None:
    """Fail if any `$ref` in `schema` does not name a component schema."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            assert name in components, schema["$ref"]
        for value in schema.values():
            resolve_refs(value, components)
    elif isinstance(schema, list):
        for value in schema:
            resolve_refs(value, components)


async def test_every_registered_method_is_described(registry: Registry) -> None:
    document = build_document(registry).model_dump(mode="json")
    assert document["openrpc"] == OPENRPC_VERSION
    assert document["info"]["title"]
    assert [entry["name"] for entry in document["methods"]] == [m.name for m in registry]
    components = document["components"]["schemas"]
    for entry, method in zip(document["methods"], registry, strict=True):
        assert entry["summary"], entry["name"]
        assert entry["paramStructure"] == "either"
        assert entry["result"]["schema"]["title"] == method.result_model.__name__
        assert [param["name"] for param in entry["params"]] == list(
            method.params_model.model_fields
        )
        resolve_refs(entry, components)


async def test_params_and_results_come_from_the_models(registry: Registry) -> None:
    document = build_document(registry).model_dump(mode="json")
    methods = {entry["name"]: entry for entry in document["methods"]}

    submit = methods["compression.jobs.submit"]
    params = {param["name"]: param for param in submit["params"]}
    assert {name: param["required"] for name, param in params.items()} == {
        "path": True,
        "algorithm": True,
        "level": False,
    }
    assert (
        params["algorithm"]["schema"] == SubmitParams.model_json_schema()["properties"]["algorithm"]
    )
    result_schema = submit["result"]["schema"]
    assert set(result_schema["required"]) == set(JobView.model_fields)
    assert result_schema["properties"]["created_at"]["format"] == "date-time"
    assert submit["errors"] == [{"code": -32002, "message": "Job queue is full"}]
    assert methods["compression.jobs.get"]["errors"][0]["code"] == -32001

    listing = methods["compression.jobs.list"]["result"]["schema"]
    assert listing["properties"]["jobs"]["items"] == {"$ref": "#/components/schemas/JobView"}
    assert methods["system.status"]["params"] == []


async def test_a_newly_registered_method_appears() -> None:
    class Ping(Params):
        word: str

    class Pong(Result):
        word: str

    async def ping(params: Ping) -> Pong:
        """Echo a word."""
        return Pong(word=params.word)

    registry = Registry()
    registry.add(Method("ping", Ping, Pong, ping))
    registry.add(Method("nothing", NoParams, Pong, ping, summary="Explicit summary."))
    entries = build_document(registry).methods
    assert [(entry["name"], entry["summary"]) for entry in entries] == [
        ("ping", "Echo a word."),
        ("nothing", "Explicit summary."),
    ]
