"""What an outbox holds: `Frame`, one encoded WebSocket frame with what the queue policies need,
and the builders the hub and the sessions share (events, replies, pings)."""

from __future__ import annotations

from typing import NamedTuple

from sigma.protocol.server_messages import Reply, encode
from sigma.websocket.frames import ping_frame, text_frame


class Frame(NamedTuple):
    """One encoded WebSocket frame, ready to write, with what the queue policies need.

    A named tuple: immutable like a frozen dataclass, and built in about half the time (one
    per event, and per reply).
    """

    data: bytes
    event_type: str
    snapshot_key: str | None = None
    """Frames with the same non-None key are snapshots of one thing; the newest supersedes."""
    droppable: bool = False
    """An event `drop_oldest` may drop (replies, pings and partial frames are not)."""


def build_frame(
    payload: bytes, event_type: str, snapshot_key: str | None = None, *, event: bool = False
) -> Frame:
    """Wrap encoded JSON in one unmasked WebSocket text frame, the same bytes for every client.

    `event`: the frame is a numbered event, which the `drop_oldest` policy may drop.
    """
    data = text_frame(payload)
    return Frame(data=data, event_type=event_type, snapshot_key=snapshot_key, droppable=event)


PING_FRAME = Frame(data=ping_frame(), event_type="ping")
"""A WebSocket ping with no payload: the keep-alive sweep queues it to quiet clients."""


def reply_frame(reply: Reply) -> Frame:
    """Encode a direct reply as a ready frame."""
    return build_frame(encode(reply), reply.type)
