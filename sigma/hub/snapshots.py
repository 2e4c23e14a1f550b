"""State on join: the newest event of each snapshot key, for clients that just arrived.

A client that connects (or subscribes to a type) should not wait for the next poll to learn how
things stand. `SnapshotCache` keeps, per key, the newest broadcast event that describes a thing:

- `system_status`, `storage_update`: one key each;
- `supervision`: one key per node (a `supervision` event carries its node's whole tree, see
  `sigma.supervision_feed`);
- `agent_status`: one key per agent (`agent_id`); an agent announced as `removed` is forgotten;
- `compression_update`: one key per job (`job_id`) while the job is live; a job that reached
  `done`, `failed` or `cancelled` is forgotten.

Heartbeats are not state: the next one comes within `heartbeat_interval`.

Replayed copies are encoded with `"snapshot": true` and keep the `seq` they were broadcast with.
The cache holds at most `max_keys` keys (the oldest updated is forgotten first), so publishers
inventing agent or job ids cannot grow it without bound. Pure: no I/O, no awaiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sigma.hub.frames import Frame, build_frame
from sigma.protocol.server_messages import Event, encode_snapshot

SINGLE_KEY_TYPES = frozenset({"system_status", "storage_update"})
FINISHED_JOB_STATES = frozenset({"done", "failed", "cancelled"})
DEFAULT_MAX_KEYS = 1024


@dataclass(slots=True)
class _Entry:
    seq: int
    event: Event
    frame: Frame | None = None  # encoded on first use: most entries are superseded unread


def snapshot_cache_key(event: Event) -> tuple[str, bool] | None:
    """(key, keep) for an event that describes a thing, None for one that does not.

    `keep` is false when the event says the thing is gone (an agent removed, a job finished):
    the key is then forgotten rather than replayed.
    """
    data = event.data
    if event.type in SINGLE_KEY_TYPES:
        return event.type, True
    if event.type == "supervision":  # one tree per node of a cluster
        return f"supervision:{data.get('node', '')}", True
    if event.type == "agent_status":
        agent = data.get("agent_id", data.get("id"))
        if agent is None:
            return None
        return f"agent_status:{agent}", data.get("change") != "removed"
    if event.type == "compression_update":
        job = data.get("job_id", data.get("id"))
        if job is None:
            return None
        return f"compression_update:{job}", data.get("state") not in FINISHED_JOB_STATES
    return None


class SnapshotCache:
    """The newest event per snapshot key; see the module docstring."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, event: Event, seq: int) -> None:
        """`event` was broadcast as `seq`: remember it if it is the newest state of its key."""
        found = snapshot_cache_key(event)
        if found is None:
            return
        key, keep = found
        self._entries.pop(key, None)  # re-inserted last: the dict's order is update order
        if not keep:
            return
        self._entries[key] = _Entry(seq, event)
        if len(self._entries) > self.max_keys:
            del self._entries[next(iter(self._entries))]

    def frames(self, types: Iterable[str]) -> list[Frame]:
        """The snapshot frames of the given types, oldest `seq` first."""
        wanted = frozenset(types)
        entries = sorted(
            (entry for entry in self._entries.values() if entry.event.type in wanted),
            key=lambda entry: entry.seq,
        )
        return [self._frame_of(entry) for entry in entries]

    def _frame_of(self, entry: _Entry) -> Frame:
        if entry.frame is None:
            payload = encode_snapshot(entry.event, entry.seq)
            entry.frame = build_frame(payload, entry.event.type, event=False)
        return entry.frame
