"""The base of every configuration section, and the field types the sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """Base of every configuration section: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")
