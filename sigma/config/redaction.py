"""Redaction: which configuration fields are secret, and how a shown configuration hides them.

A field marked with `SECRET_FIELD` is shown as "***" when set; a URL's password is too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo

REDACTED = "***"
SECRET_FIELD: JsonDict = {"secret": True}
"""`json_schema_extra` of a field whose value must never be shown (logs, `config check`)."""


def url_without_password(url: str) -> str:
    """`url` with its password, if it has one, shown as "***" (for logs and printed configs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{REDACTED}@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redacted(model: BaseModel) -> dict[str, Any]:
    """`model` as JSON-ready data, every set secret field (nested ones too) shown as `***`."""
    dumped = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if is_secret(info):
            dumped[name] = REDACTED if value else value
        elif isinstance(value, BaseModel):
            dumped[name] = redacted(value)
    return dumped


def is_secret(info: FieldInfo) -> bool:
    """Whether a config field is marked secret (`SECRET_FIELD`)."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))
