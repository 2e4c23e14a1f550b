"""Logging setup with structlog: the console lines operators know, or JSON lines.

Console: `2026-01-28T12:50:32Z INF Broadcasting system status event client_count=3`.
JSON: one object a line with `timestamp`, `level`, `event` and the bound fields.
Secrets are redacted whatever the format: values of keys that name secrets (`token`,
`authorization`, `jwt_secret`, ...), and, inside any logged text (messages, URLs, request
targets, headers, tracebacks), bearer credentials, `token=`-style query parameters and anything
shaped like a JWT.
"""

from __future__ import annotations

import logging
import re
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
SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "jwt",
        "jwt_secret",
        "secret",
        "api_key",
        "x-api-key",
        "key",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "password",
    }
)
REDACTED = "***"
MAX_REDACT_DEPTH = 4
_SECRET_PATTERNS = (
    # `Authorization: Bearer <credential>` wherever it is quoted.
    (re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;&]+"), rf"\1\2{REDACTED}"),
    # `?token=...`, `&api_key=...` in URLs and request targets.
    (
        re.compile(r"(?i)([?&;](?:access_|refresh_|id_)?(?:token|api_key|key|jwt)=)[^&\s\"'#]+"),
        rf"\1{REDACTED}",
    ),
    # Anything shaped like a JWT: base64url '{"' header, payload, signature.
    (re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
)
_HINTS = ("earer", "EARER", "=", "eyJ")


def redact_text(text: str) -> str:
    """Replace bearer credentials, `token=` query values and JWT-shaped strings with ***."""
    if not any(hint in text for hint in _HINTS):
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """Redact secrets inside a logged value: strings, and mappings and sequences of them."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= MAX_REDACT_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and key.lower() in SECRET_KEYS and item
            else redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, depth + 1) for item in value)
    if isinstance(value, bytes):
        return redact_text(value.decode("latin-1"))
    return value


def _redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key.lower() in SECRET_KEYS:
            if value:
                event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(value)
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
            structlog.processors.format_exc_info,
            _redact_secrets,  # after format_exc_info, so tracebacks are redacted too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
