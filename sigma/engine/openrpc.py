"""`rpc.discover`: the OpenRPC 1.x document of every registered method, built from the registry.

Nothing here is written by hand: each method's params become OpenRPC content descriptors, one per
field of its params model (`paramStructure: "either"`, since params may come by name or by
position, in field order), and its result is the result model's JSON schema
(`model_json_schema`, serialisation mode). Nested models go to `components.schemas` and are
referenced from there. The document is built on every call, so it always matches the registry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, JsonValue
from pydantic.json_schema import JsonSchemaMode

from sigma import __version__
from sigma.engine.jsonrpc import Method, Registry
from sigma.engine.models import NoParams, Result

OPENRPC_VERSION = "1.3.2"
REF_TEMPLATE = "#/components/schemas/{model}"


class OpenRpcInfo(Result):
    """The document's `info` object."""

    title: str
    version: str
    description: str


class OpenRpcDocument(Result):
    """An OpenRPC document."""

    openrpc: str
    info: OpenRpcInfo
    methods: list[dict[str, JsonValue]]
    components: dict[str, JsonValue] = Field(description="shared schemas under `schemas`")


class _SchemaCollector:
    """Gathers the `$defs` of many JSON schemas into one `components.schemas` mapping."""

    def __init__(self) -> None:
        self.schemas: dict[str, JsonValue] = {}

    def schema_of(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        """`model`'s JSON schema, its nested definitions moved into `schemas`."""
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            known = self.schemas.setdefault(name, definition)
            if known != definition:
                raise ValueError(f"two different schemas are both called {name!r}")
        return schema


def _method_entry(method: Method[Any, Any], collector: _SchemaCollector) -> dict[str, JsonValue]:
    params_schema = collector.schema_of(method.params_model, "validation")
    required = set(params_schema.get("required", ()))
    params: list[JsonValue] = []
    for name, schema in params_schema.get("properties", {}).items():
        descriptor: dict[str, JsonValue] = {
            "name": name,
            "required": name in required,
            "schema": schema,
        }
        if "description" in schema:
            descriptor["description"] = schema["description"]
        params.append(descriptor)
    result_schema = collector.schema_of(method.result_model, "serialization")
    entry: dict[str, JsonValue] = {
        "name": method.name,
        "summary": method.describe(),
        "paramStructure": "either",
        "params": params,
        "result": {"name": method.result_model.__name__, "schema": result_schema},
    }
    if method.errors:
        entry["errors"] = [
            {"code": error.code, "message": error.message} for error in method.errors
        ]
    return entry


def build_document(registry: Registry) -> OpenRpcDocument:
    """The OpenRPC document of every method in `registry`, in registration order."""
    collector = _SchemaCollector()
    methods = [_method_entry(method, collector) for method in registry]
    return OpenRpcDocument(
        openrpc=OPENRPC_VERSION,
        info=OpenRpcInfo(
            title="Sigma engine",
            version=__version__,
            description="JSON-RPC 2.0 over HTTP POST /rpc: host status and compression jobs.",
        ),
        methods=methods,
        components={"schemas": collector.schemas},
    )


class Discovery:
    """The `rpc.discover` handler, bound to the registry it describes."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def register(self) -> None:
        """Add `rpc.discover` to the registry it describes."""
        self._registry.add(Method("rpc.discover", NoParams, OpenRpcDocument, self.discover))

    async def discover(self, params: NoParams) -> OpenRpcDocument:
        """The OpenRPC document of every method this engine answers, generated from its models."""
        return build_document(self._registry)
