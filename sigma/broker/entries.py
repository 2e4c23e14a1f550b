"""The cluster stream's entries and Sigma's events, one from the other.

Each event is one entry of the stream `{sigma}:events`, with the id `<seq>-0` and two fields:
`e`, the epoch it was numbered in, and `d`, the event without its seq as JSON
(`entry_payload`). Every node reads every entry back (`parse_entries`), so the reading is
checked cheaply, and an entry that is not one of Sigma's costs its seq and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from sigma.protocol.event_types import KNOWN_EVENT_TYPES
from sigma.protocol.server_messages import Event

log = structlog.get_logger("sigma.broker")


def entry_payload(event: Event) -> bytes:
    """The `d` field of `event`'s stream entry: its type, timestamp and data as JSON."""
    fields = {"type": event.type, "timestamp": event.timestamp, "data": event.data}
    try:
        return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return event.model_dump_json(exclude={"seq"}).encode()


@dataclass(frozen=True)
class Entries:
    """Stream entries read as events: the seqs they span, the events, and whether all of them
    belonged to the epoch asked for (an entry of another one ends the batch)."""

    first_seq: int
    last_seq: int
    events: tuple[tuple[int, Event], ...]
    complete: bool


def parse_entries(entries: Sequence[Any], epoch: str) -> Entries | None:
    """The `(seq, event)` pairs of stream entries of `epoch`; None when the first is not.

    An entry that is not one of Sigma's (another writer on the same keys) is skipped with a
    warning, so it costs its seq and nothing else.
    """
    events: list[tuple[int, Event]] = []
    seqs: list[int] = []
    for entry in entries:
        fields = entry.field_values
        if fields.get(b"e", b"").decode(errors="replace") != epoch:
            break
        try:
            seq = int(entry.identifier.split(b"-", 1)[0])
        except ValueError:
            break  # not an id Sigma writes: this is not our numbering
        seqs.append(seq)
        event = _event_of(fields.get(b"d"))
        if event is None:
            log.warning(
                "Malformed stream entry skipped", id=entry.identifier.decode(errors="replace")
            )
            continue
        events.append((seq, event))
    if not seqs:
        return None
    return Entries(seqs[0], seqs[-1], tuple(events), complete=len(seqs) == len(entries))


def _event_of(payload: bytes | None) -> Event | None:
    """The event an entry's `d` field holds (checked cheaply: this runs for every event on
    every node), or None when it is not one."""
    try:
        raw = orjson.loads(payload or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    event_type, timestamp, data = raw.get("type"), raw.get("timestamp"), raw.get("data")
    if event_type not in KNOWN_EVENT_TYPES or not isinstance(timestamp, str):
        return None
    if not isinstance(data, dict):
        return None
    return Event.model_construct(type=event_type, timestamp=timestamp, data=data)
