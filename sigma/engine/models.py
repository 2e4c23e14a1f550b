"""Building blocks shared by every engine method's params and result models.

`Params` models are strict (no `"5"` for an int) and reject unknown keys, so a typo in a call is
an invalid-params error that names the key. `Result` models are frozen. `Timestamp` serialises as
ISO 8601 with a UTC offset (`2026-01-28T12:50:32.786261+00:00`), the only timestamp form Sigma
puts on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


def _isoformat(moment: datetime) -> str:
    return moment.isoformat()


Timestamp = Annotated[
    datetime,
    PlainSerializer(_isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A datetime that goes on the wire as ISO 8601 with its UTC offset."""


def utc_now() -> datetime:
    """The current wall-clock time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Params(BaseModel):
    """Base of every method's params: frozen, strict types, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class NoParams(Params):
    """The params of a method that takes none: `{}`, `[]` or no `params` member at all."""


class Result(BaseModel):
    """Base of every method's result: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")
