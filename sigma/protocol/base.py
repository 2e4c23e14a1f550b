"""What every wire model shares: `Frozen`, their base, and `RequestId`, the `id` a client
frame may carry, which the reply to it echoes as `request_id`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

RequestId = str | int | None


class Frozen(BaseModel):
    """Base of every wire model: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
