"""The server's two kinds of message and their JSON: `Event`, broadcast and numbered by the
hub, and `Reply`, a direct reply to one client (`seq: null`; `sigma.protocol.replies` builds
each one).

Events are encoded to JSON once (`encode_event()`), never once per client.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import Field

from sigma.protocol.base import Frozen
from sigma.protocol.event_types import EventType
from sigma.protocol.timestamps import utc_now_iso


class Event(Frozen):
    """A broadcast event. Producers leave `seq` unset; the hub numbers it.

    `snapshot` is true on the copies of retained state a client gets when it joins or
    subscribes (`seq` is then the one the event was broadcast with, at most the welcome's
    `last_seq` on join); live events leave it out of the JSON and decode as false.
    """

    type: EventType
    timestamp: str = Field(default_factory=utc_now_iso)
    seq: int | None = None
    data: dict[str, Any]
    snapshot: bool = Field(default=False, exclude=True)


class Reply(Frozen):
    """A direct reply to one client (welcome, pong, subscriptions, error): `seq` is null."""

    type: Literal["notification", "pong", "subscriptions", "error"]
    timestamp: str = Field(default_factory=utc_now_iso)
    seq: None = None
    data: dict[str, Any]


ServerMessage = Event | Reply


def encode(message: ServerMessage) -> bytes:
    """Serialise one server message to the UTF-8 JSON text of one frame."""
    return message.model_dump_json().encode()


def encode_event(event: Event, seq: int) -> bytes:
    """The JSON text of `event` numbered `seq`: what `encode` gives for its numbered copy.

    orjson writes it straight from the fields, without building the copy (the hub does this for
    every event); data orjson cannot serialise goes through pydantic instead.
    """
    envelope = {"type": event.type, "timestamp": event.timestamp, "seq": seq, "data": event.data}
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    except TypeError:
        return encode(event.model_copy(update={"seq": seq}))


def encode_snapshot(event: Event, seq: int) -> bytes:
    """The JSON text of `event` numbered `seq`, replayed as retained state: `"snapshot": true`."""
    envelope = {
        "type": event.type,
        "timestamp": event.timestamp,
        "seq": seq,
        "data": event.data,
        "snapshot": True,
    }
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    except TypeError:
        return orjson.dumps({**orjson.loads(encode_event(event, seq)), "snapshot": True})


def make_event(event_type: EventType, data: dict[str, Any]) -> Event:
    """Build an unnumbered event stamped with the current time."""
    return Event(type=event_type, data=data)


def make_checked_event(event_type: EventType, data: dict[str, Any]) -> Event:
    """`make_event` for input validated already (the publish API's items).

    Every field is given, so that pydantic resolves no default (its default-factory path
    inspects the factory's signature on each call). Validating the four given fields, in
    pydantic-core, costs less than `model_construct`, which walks the fields in Python.
    """
    return Event(type=event_type, timestamp=utc_now_iso(), seq=None, data=data)
