"""Unmasked server-to-client WebSocket frames (RFC 6455, section 5.2), encoded once.

A server's frames are never masked and Sigma negotiates no extension, so a frame's bytes are the
same for every client: the hub encodes an event once and hands the same bytes to every outbox.
wsproto encodes frames too, but only through a connection's state machine (its frame encoder is
not public API), so this module does the few lines of RFC 6455 the server side needs.
"""

from __future__ import annotations

import struct
from enum import IntEnum

MAX_CONTROL_PAYLOAD_BYTES = 125
"""RFC 6455 5.5: control frames carry at most 125 bytes."""


class Opcode(IntEnum):
    """The frame opcodes a server sends (RFC 6455 5.2)."""

    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_FIN = 0x80
_SHORT_LENGTH_MAX = 125
_MEDIUM_LENGTH_MAX = 0xFFFF
_MEDIUM_LENGTH = 126
_LONG_LENGTH = 127


def encode_frame(opcode: Opcode, payload: bytes) -> bytes:
    """One final, unmasked frame: the header of section 5.2, then `payload` as it is."""
    length = len(payload)
    first = _FIN | opcode
    if length <= _SHORT_LENGTH_MAX:
        header = bytes((first, length))
    elif length <= _MEDIUM_LENGTH_MAX:
        header = struct.pack("!BBH", first, _MEDIUM_LENGTH, length)
    else:
        header = struct.pack("!BBQ", first, _LONG_LENGTH, length)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """A text frame around `payload`, which must already be UTF-8 (JSON from orjson is)."""
    return encode_frame(Opcode.TEXT, payload)


def ping_frame(payload: bytes = b"") -> bytes:
    """A ping control frame."""
    return _control_frame(Opcode.PING, payload)


def pong_frame(payload: bytes) -> bytes:
    """The pong that answers a ping: it carries the ping's payload back (RFC 6455 5.5.3)."""
    return _control_frame(Opcode.PONG, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a reason, the reason cut to fit 125 bytes whole."""
    encoded = reason.encode()
    room = MAX_CONTROL_PAYLOAD_BYTES - 2
    if len(encoded) > room:
        encoded = encoded[:room].decode(errors="ignore").encode()
    return _control_frame(Opcode.CLOSE, struct.pack("!H", code) + encoded)


def _control_frame(opcode: Opcode, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD_BYTES:
        raise ValueError(f"a control frame carries at most 125 bytes (got {len(payload)})")
    return encode_frame(opcode, payload)
