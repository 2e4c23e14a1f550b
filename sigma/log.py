"""Logging setup with structlog: the console lines operators know, or JSON lines.

Console: `2026-01-28T12:50:32Z INF Broadcasting system status event client_count=3`.
JSON: one object a line with `timestamp`, `level`, `event` and the bound fields.
Values of keys that hold secrets are redacted whatever the format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVEL_TAGS = {
    "debug": "DBG",
    "info": "INF",
    "warning": "WRN",
    "error": "ERR",
    "critical": "CRT",
    "exception": "ERR",
}
SECRET_KEYS = frozenset({"token", "jwt_secret", "api_key", "key", "authorization", "password"})
REDACTED = "***"


def _redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event_dict.keys() & SECRET_KEYS:
        if event_dict[key]:
            event_dict[key] = REDACTED
    return event_dict


def _console_renderer(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    timestamp = event_dict.pop("timestamp", "")
    level = LEVEL_TAGS.get(event_dict.pop("level", method_name), "INF")
    message = event_dict.pop("event", "")
    exception = event_dict.pop("exception", None)
    fields = " ".join(f"{key}={_console_value(value)}" for key, value in event_dict.items())
    line = " ".join(part for part in (timestamp, level, str(message), fields) if part)
    return f"{line}\n{exception}" if exception else line


def _console_value(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | None = None
) -> None:
    """Route structlog to `stream` (stderr by default) at `level`, as console or JSON lines."""
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else _console_renderer
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
