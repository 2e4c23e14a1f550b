"""One-line, human summaries of events for the log of `sigma watch`.

Each core type has its own short form (`cpu 12.5% mem 40.0% load 0.52`, `agent w1 busy updated`);
data of an unexpected shape falls back to its first key=value pairs. Never raises on odd data.
"""

from __future__ import annotations

from typing import Any

from sigma.protocol.server_messages import Event

JsonObject = dict[str, Any]
SUMMARY_CHARS = 120


def summarize(event: Event) -> str:
    """A short, human summary of an event's data; unknown shapes fall back to key=value pairs."""
    data = event.data
    match event.type:
        case "heartbeat":
            parts = [_pair("beat", data.get("beat")), _pair("clients", data.get("client_count"))]
        case "system_status":
            parts = [
                _pair("cpu", _percent(data.get("cpu_usage"))),
                _pair("mem", _percent(_get(data, "memory", "percent"))),
                _pair("load", _load(data.get("load_average"))),
            ]
        case "agent_status":
            parts = [
                _pair("agent", data.get("agent_id", data.get("id"))),
                data.get("state"),
                data.get("change"),
            ]
        case "compression_update":
            parts = [
                _pair("job", _short_id(data.get("job_id", data.get("id")))),
                data.get("state"),
                _percent(data.get("progress")),
                data.get("path"),
            ]
        case "storage_update":
            parts = [_pair("data_dir", _percent(_get(data, "data_dir", "percent")))]
        case "rpc_error":
            parts = [data.get("method"), data.get("message")]
        case "connection_error":
            parts = [data.get("error"), _pair("attempt", data.get("attempt"))]
        case "notification":
            parts = [data.get("message") or data.get("kind")]
        case "supervision":
            parts = [
                data.get("kind"),
                f"{data.get('supervisor')}/{data.get('child_id')}",
                _pair("restarts", data.get("restarts")),
                data.get("reason"),
            ]
        case _:
            parts = []
    text = " ".join(str(part) for part in parts if part not in (None, ""))
    return clip(text or _generic(data))


def _pair(name: str, value: object) -> str | None:
    return None if value is None else f"{name} {value}"


def _get(data: JsonObject, *path: str) -> object:
    current: object = data
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def _percent(value: object) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}%"
    return None


def _load(value: object) -> str | None:
    if isinstance(value, list | tuple) and value and isinstance(value[0], int | float):
        return f"{value[0]:.2f}"
    return None


def _short_id(value: object) -> str | None:
    return None if value is None else str(value)[:8]


def _generic(data: JsonObject) -> str:
    return " ".join(f"{key}={value}" for key, value in list(data.items())[:4])


def clip(text: str) -> str:
    """`text`, cut to `SUMMARY_CHARS` with an ellipsis."""
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
