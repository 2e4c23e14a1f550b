"""Helpers of the reliability suite: clients that check every `seq`, a steady publisher, figures.

A `Tracker` is one client's ledger: the epoch and the first seq it was welcomed at, then each
event's seq, counting what would be a loss (a gap) or a duplicate. `track()` keeps one client
connected for as long as it runs: closed with 1012 (hub restart) or abnormally (1006: its session
crashed or was cut), it reconnects with `?since=<last seq>&epoch=<epoch>` and must be welcomed
with `recovered: true`; the replay then fills the gap.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import trio
from helpers import API_KEY, EVERY_TYPE
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from sigma.supervision.spec import ChildExited, ChildStarted, SupervisionEvent

RESUMABLE_CLOSE_CODES = frozenset({1006, 1011, 1012})
"""Abnormal close (no close frame), internal error, service restart: reconnect and resume."""
FINAL_CLOSE_CODES = frozenset({1000, 1001})
RECONNECT_PAUSE_S = 0.02


@dataclass
class Tracker:
    """What one client received, checked as it arrives."""

    index: int
    epoch: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    resumes: int = 0
    unrecovered: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    resume_latencies_s: list[float] = field(default_factory=list)
    final_close: int | None = None

    def welcomed(self, data: dict[str, Any], closed_at: float | None) -> None:
        """Check a welcome: the first sets the starting point, later ones must have recovered."""
        if self.epoch is None:
            self.epoch = data["epoch"]
            self.first_seq = self.last_seq = data["last_seq"]
            return
        self.resumes += 1
        if data.get("recovered") is not True or data["epoch"] != self.epoch:
            self.unrecovered += 1
        if closed_at is not None:
            self.resume_latencies_s.append(trio.current_time() - closed_at)

    def accept(self, seq: int) -> None:
        """One event: the next seq is expected; anything else is a loss or a duplicate."""
        assert self.last_seq is not None, "an event before the welcome"
        if seq <= self.last_seq:
            self.duplicated += 1
            return
        self.lost += seq - self.last_seq - 1
        self.last_seq = seq
        self.received += 1

    @property
    def resume_query(self) -> str:
        # every type, the opt-in ones too: then every seq is ours and a hole is a loss
        if self.last_seq is None:
            return f"?{EVERY_TYPE}"
        return f"?since={self.last_seq}&epoch={self.epoch}&{EVERY_TYPE}"


async def track(url: str, tracker: Tracker) -> None:
    """Keep one client connected and resuming until it is closed with 1000 or 1001."""
    closed_at: float | None = None
    while True:
        try:
            async with open_websocket_url(url + tracker.resume_query) as ws:
                try:
                    welcome = orjson.loads(await ws.get_message())
                    tracker.welcomed(welcome["data"], closed_at)
                    while True:
                        message = orjson.loads(await ws.get_message())
                        if message["seq"] is not None and not message.get("snapshot"):
                            tracker.accept(message["seq"])
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason is not None else 1006
        except (HandshakeError, OSError, trio.BrokenResourceError):
            await trio.sleep(RECONNECT_PAUSE_S)  # refused or cut during the handshake: again
            continue
        tracker.closes[code] += 1
        if code in FINAL_CLOSE_CODES or code not in RESUMABLE_CLOSE_CODES:
            tracker.final_close = code
            return
        closed_at = trio.current_time()


@dataclass
class Publisher:
    """Publishes a steady load through the API: `batch` events every `period_s`."""

    http: httpx.AsyncClient
    batch: int = 5
    period_s: float = 0.05
    published: int = 0
    last_seq: int = 0

    async def run(self, stop: trio.Event) -> None:
        """Publish until `stop` is set."""
        deadline = trio.current_time()
        while not stop.is_set():
            await self.publish_once()
            deadline += self.period_s
            await trio.sleep_until(deadline)

    async def publish_once(self) -> int:
        """One batch; returns the last seq it got."""
        items = [
            {"type": "notification", "data": {"kind": "load", "n": self.published + n}}
            for n in range(self.batch)
        ]
        response = await self.http.post(
            "/api/publish",
            content=orjson.dumps(items),
            headers={"authorization": f"Bearer {API_KEY}"},
            timeout=30.0,
        )
        assert response.status_code == 200, response.text
        self.published += self.batch
        self.last_seq = response.json()["seqs"][-1]
        return self.last_seq


def restart_latencies_s(events: Iterable[SupervisionEvent], child_id: str) -> list[float]:
    """For each abnormal exit of `child_id`, the time until it was started again."""
    latencies: list[float] = []
    crashed_at: float | None = None
    for event in events:
        if isinstance(event, ChildExited) and event.child_id == child_id and event.abnormal:
            crashed_at = event.at
        elif isinstance(event, ChildStarted) and event.child_id == child_id and crashed_at:
            latencies.append(event.at - crashed_at)
            crashed_at = None
    return latencies


def drain_events(
    events: trio.MemoryReceiveChannel[SupervisionEvent],
) -> list[SupervisionEvent]:
    """Every supervision event waiting in `events` now."""
    taken = []
    while True:
        try:
            taken.append(events.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return taken


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | int | None]:
    """Count, median and max, in milliseconds."""
    if not latencies_s:
        return {"count": 0, "median_ms": None, "max_ms": None}
    return {
        "count": len(latencies_s),
        "median_ms": round(statistics.median(latencies_s) * 1000, 1),
        "max_ms": round(max(latencies_s) * 1000, 1),
    }


def count_tasks() -> int:
    """Every task in this trio run: what leak checks compare before and after."""
    pending = [trio.lowlevel.current_root_task()]
    total = 0
    while pending:
        task = pending.pop()
        total += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return total
