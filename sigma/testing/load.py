"""`Publisher`: a steady load of events through `POST /api/publish`, for fault-injection tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import trio


class PublishFailed(AssertionError):
    """The gateway did not accept a publish (its status and body are in the message)."""


@dataclass
class Publisher:
    """Publishes `batch` notification events every `period_s` with the API key `api_key`.

    `published` counts the events accepted, `last_seq` is the seq of the newest one.
    """

    http: httpx.AsyncClient
    api_key: str
    batch: int = 5
    period_s: float = 0.05
    published: int = 0
    last_seq: int = 0

    async def run(self, stop: trio.Event | None = None) -> None:
        """Publish on a fixed schedule until `stop` is set (or until cancelled)."""
        deadline = trio.current_time()
        while stop is None or not stop.is_set():
            await self.publish_once()
            deadline += self.period_s
            await trio.sleep_until(deadline)

    async def publish_once(self) -> int:
        """One batch; returns the seq of its last event."""
        items = [
            {"type": "notification", "data": {"kind": "load", "n": self.published + n}}
            for n in range(self.batch)
        ]
        seqs = await publish(self.http, self.api_key, items)
        self.published += len(seqs)
        self.last_seq = seqs[-1]
        return self.last_seq


async def publish(
    http: httpx.AsyncClient, api_key: str, events: list[dict[str, Any]] | dict[str, Any]
) -> list[int]:
    """Publish one event or a list of them; returns their seqs. `PublishFailed` if refused."""
    response = await http.post(
        "/api/publish",
        content=orjson.dumps(events),
        headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"},
        timeout=30.0,
    )
    if response.status_code != 200:
        raise PublishFailed(f"publish answered HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    return list(body["seqs"]) if "seqs" in body else [int(body["seq"])]
