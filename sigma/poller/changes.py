"""What the poller publishes: engine results and failures in, events out; no I/O, no clock.

`ChangeTracker` remembers the last result of each polled method and turns every new result into
the events that tell clients what is new:

- `system.status` -> one `system_status` event every time (data = the result as it came);
- `storage.status` -> one `storage_update` only when the result differs meaningfully from the
  last one published (byte counts and percentages of filesystem usage move all the time, so small
  moves are ignored: `STORAGE_TOLERANCES`);
- `agents.list` -> one `agent_status` per agent that appeared, changed or vanished (fields that
  change on every poll, `AGENT_IGNORED_FIELDS`, are published but not compared);
- `compression.jobs.list` -> one `compression_update` per job that appeared or changed.

Agent and job events carry the record's own fields plus `agent_id` (agents) or `id` and
`job_id`, `state` and `progress` (jobs), and say what happened: `change` ("added", "updated" or,
for agents, "removed"), `changed` (sorted field names; every field for "added", none for
"removed") and `previous` (the old values of the changed fields). `storage_update` carries the
result plus `changed` (its top-level fields that moved).

A result of the wrong shape raises `EngineProtocolError` (the engine broke its contract); the
poller reports it as an `rpc_error`, the same way as an error reply (`rpc_error()`).

`EngineLink` decides about reachability: a `connection_error` and a backoff delay per failed
attempt, and an `engine_recovered` notification when the engine answers again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from sigma.backoff import Backoff
from sigma.errors import EngineProtocolError
from sigma.protocol.server_messages import Event, make_event

JsonObject = dict[str, Any]
RecordId = str | int

MIB = 1024 * 1024
STORAGE_TOLERANCES: Mapping[str, float] = {"used": 16 * MIB, "free": 16 * MIB, "percent": 0.1}
"""Largest move of a filesystem figure (bytes, or percentage points) that is not a change."""

AGENT_IGNORED_FIELDS: frozenset[str] = frozenset({"last_heartbeat"})
"""Agent fields that change on every poll while nothing happens; never a reason to publish."""

RETRY_JITTER = 0.2
"""Up to 20 % added to each retry delay, so pollers that lost one engine do not return in step."""

TRACKED_METHODS: frozenset[str] = frozenset(
    {"system.status", "storage.status", "agents.list", "compression.jobs.list"}
)
"""The methods whose results become events; other polled methods are only checked."""


class ChangeTracker:
    """Turns successive engine results into events, publishing only what changed.

    One instance lives as long as one incarnation of the poller: a restarted poller starts empty,
    so its first results publish everything again, which is what a client that missed events
    needs anyway.
    """

    def __init__(
        self,
        *,
        storage_tolerances: Mapping[str, float] = STORAGE_TOLERANCES,
        agent_ignored_fields: frozenset[str] = AGENT_IGNORED_FIELDS,
    ) -> None:
        self._storage_tolerances = storage_tolerances
        self._agent_ignored_fields = agent_ignored_fields
        self._storage: JsonObject | None = None
        self._agents: dict[RecordId, JsonObject] = {}
        self._jobs: dict[RecordId, JsonObject] = {}

    def on_result(self, method: str, result: object) -> list[Event]:
        """The events a successful reply to `method` gives, in order; may be none.

        Raises `EngineProtocolError` when `result` does not have the shape `method` promises.
        """
        if method == "system.status":
            return [make_event("system_status", _object(result, method))]
        if method == "storage.status":
            return self._on_storage(_object(result, method))
        if method == "agents.list":
            return self._on_agents(_records(result, method, "agents"))
        if method == "compression.jobs.list":
            return self._on_jobs(_records(result, method, "jobs"))
        return []

    @staticmethod
    def rpc_error(method: str, code: int, message: str, data: object = None) -> Event:
        """The `rpc_error` event for an error reply (or an unusable one) to `method`."""
        return make_event(
            "rpc_error", {"method": method, "code": code, "message": message, "data": data}
        )

    def _on_storage(self, storage: JsonObject) -> list[Event]:
        previous = self._storage
        if previous is None:
            changed = sorted(storage)
        else:
            changed = sorted(
                key
                for key in storage.keys() | previous.keys()
                if not _same(previous.get(key), storage.get(key), key, self._storage_tolerances)
            )
            if not changed:
                return []
        self._storage = storage
        return [make_event("storage_update", {**storage, "changed": changed})]

    def _on_agents(self, agents: dict[RecordId, JsonObject]) -> list[Event]:
        events = []
        for agent_id, agent in agents.items():
            change = _compare(self._agents.get(agent_id), agent, self._agent_ignored_fields)
            if change is not None:
                kind, changed, previous = change
                data = {**agent, "agent_id": agent_id}
                events.append(make_event("agent_status", _describe(data, kind, changed, previous)))
        for agent_id in self._agents.keys() - agents.keys():
            data = {**self._agents[agent_id], "agent_id": agent_id}
            events.append(make_event("agent_status", _describe(data, "removed", [], {})))
        self._agents = agents
        return events

    def _on_jobs(self, jobs: dict[RecordId, JsonObject]) -> list[Event]:
        # A job missing from the list is not announced: the list is a page (newest first) and
        # finished jobs age out of the engine's retention, so absence is not news about the job.
        events = []
        for job_id, job in jobs.items():
            change = _compare(self._jobs.get(job_id), job, frozenset())
            if change is not None:
                kind, changed, previous = change
                data = {
                    **job,
                    "id": job_id,
                    "job_id": job_id,
                    "state": job.get("state"),
                    "progress": job.get("progress", job.get("percent")),
                }
                events.append(
                    make_event("compression_update", _describe(data, kind, changed, previous))
                )
        self._jobs = jobs
        return events


def _describe(data: JsonObject, kind: str, changed: list[str], previous: JsonObject) -> JsonObject:
    return {**data, "change": kind, "changed": changed, "previous": previous}


def _compare(
    old: JsonObject | None, new: JsonObject, ignored: frozenset[str]
) -> tuple[str, list[str], JsonObject] | None:
    """(kind, changed field names, their previous values) or None when nothing changed."""
    if old is None:
        return "added", sorted(new), {}
    compared = (old.keys() | new.keys()) - ignored
    changed = sorted(key for key in compared if old.get(key) != new.get(key))
    if not changed:
        return None
    return "updated", changed, {key: old.get(key) for key in changed}


def _same(old: object, new: object, key: str | None, tolerances: Mapping[str, float]) -> bool:
    """Equal, except that numbers under a key in `tolerances` may differ by that much."""
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(
            _same(old[name], new[name], name, tolerances) for name in old
        )
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            _same(a, b, key, tolerances) for a, b in zip(old, new, strict=True)
        )
    if (
        key is not None
        and key in tolerances
        and isinstance(old, int | float)
        and isinstance(new, int | float)
        and not isinstance(old, bool)
        and not isinstance(new, bool)
    ):
        return abs(old - new) <= tolerances[key]
    return old == new


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(result: object, method: str) -> JsonObject:
    if not isinstance(result, dict):
        raise EngineProtocolError(f"result of {method} must be an object, got {_json_type(result)}")
    return result


def _records(result: object, method: str, member: str) -> dict[RecordId, JsonObject]:
    """The records in `result[member]`, by their `id`, in the engine's order."""
    items = _object(result, method).get(member)
    if not isinstance(items, list):
        raise EngineProtocolError(
            f"result.{member} of {method} must be an array, got {_json_type(items)}"
        )
    records: dict[RecordId, JsonObject] = {}
    for index, item in enumerate(items):
        record_id = item.get("id") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or isinstance(record_id, bool)
            or not isinstance(record_id, str | int)
        ):
            raise EngineProtocolError(
                f"result.{member}[{index}] of {method} must be an object with an id"
                " (a string or an integer)"
            )
        records[record_id] = item
    return records


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if _is_number(value) else type(value).__name__)


class EngineLink:
    """Whether the engine answers: counts failed attempts, spaces retries, announces recovery.

    Retries wait `Backoff` delays (exponential from `min_s`, with jitter) capped at `max_s`, so
    every wait lies in `min_s .. max_s`. `rng` is the jitter's source, seeded in tests.
    """

    def __init__(self, *, min_s: float, max_s: float, rng: random.Random) -> None:
        self._max_s = max(min_s, max_s)
        self._backoff = Backoff(min_s=min_s, max_s=self._max_s, factor=RETRY_JITTER)
        self._rng = rng
        self.failed_attempts = 0
        """Attempts that failed in a row; 0 while the engine answers."""

    @property
    def reachable(self) -> bool:
        """False from the first failed attempt until the engine answers again."""
        return self.failed_attempts == 0

    def failed(self, engine_url: str, error: str) -> tuple[Event, float]:
        """Record a failed attempt: the `connection_error` to publish and the seconds to wait."""
        delay_s = min(self._max_s, self._backoff.delay_s(self.failed_attempts, self._rng))
        self.failed_attempts += 1
        data = {
            "engine_url": engine_url,
            "error": error,
            "attempt": self.failed_attempts,
            "retry_in_s": round(delay_s, 3),
        }
        return make_event("connection_error", data), delay_s

    def answered(self, engine_url: str) -> list[Event]:
        """Record an answer (any answer): an `engine_recovered` notification after failures."""
        attempts, self.failed_attempts = self.failed_attempts, 0
        if not attempts:
            return []
        data = {
            "kind": "engine_recovered",
            "engine_url": engine_url,
            "after_attempts": attempts,
            "message": f"The engine answers again after {attempts} failed attempt(s).",
        }
        return [make_event("notification", data)]
