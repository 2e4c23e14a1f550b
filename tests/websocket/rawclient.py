"""A bare-socket WebSocket client that can say anything, to test the server's edge.

Real clients (browsers, trio-websocket, `websockets`) refuse to send a broken frame, so they
cannot show what the server does with one. This client does the HTTP upgrade with h11 over a
plain `trio.SocketStream`, then writes frames built here byte by byte (RFC 6455 §5.2): any
opcode, RSV bits, fragmentation, masked or not, any payload. It reads the server's frames with
a decoder of its own that also holds the server to the RFC (unmasked, no RSV bits, control
frames unfragmented and at most 125 bytes, a well-formed close payload), so every test checks
the server's side of the wire too.

Every read is bounded by `trio.fail_after`; a connection reset where the RFC wants a clean close
is an `AssertionError` that says so.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson
import trio

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 §1.3: appended to the key before hashing it into `Sec-WebSocket-Accept`."""

READ_TIMEOUT_S = 2.0
MAX_CONTROL_PAYLOAD = 125

SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
"""Codes below 3000 an endpoint may put in a close frame (RFC 6455 §7.4.1 and IANA's registry);
3000-4999 are sendable too (§7.4.2)."""


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2); 3-7 and 11-15 are reserved and have no name."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def is_sendable_close_code(code: int) -> bool:
    """Whether an endpoint may send `code` in a close frame (RFC 6455 §7.4)."""
    return code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def mask(payload: bytes, key: bytes) -> bytes:
    """`payload` XOR-ed with the 4-byte masking `key` repeated (RFC 6455 §5.3)."""
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return masked.to_bytes(len(payload), "big")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """One frame as a client writes it (RFC 6455 §5.2), or deliberately not as it should.

    `opcode` may be any 4-bit value and `rsv` any 3-bit value (RSV1 is 0b100); `masked=False`
    leaves out the mask a client must send.
    """
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length <= MAX_CONTROL_PAYLOAD:
        header = bytes([first, mask_bit | length])
    elif length <= 0xFFFF:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    key = secrets.token_bytes(4)
    return header + key + mask(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """The body of a close frame: a 2-byte code then the reason's bytes; None for an empty one."""
    return b"" if code is None else struct.pack("!H", code) + reason


def fragments(
    payload: bytes, size: int, opcode: int = Opcode.TEXT, *, between: bytes = b""
) -> bytes:
    """A message of `opcode` split into fragments of `size` bytes, `between` (frames) after each
    fragment but the last."""
    parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    frames = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        frames.append(encode_frame(opcode if index == 0 else Opcode.CONTINUATION, part, fin=last))
        if not last:
            frames.append(between)
    return b"".join(frames)


@dataclass(frozen=True)
class Frame:
    """One frame the server sent."""

    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def is_control(self) -> bool:
        """Close, ping and pong (opcodes 8 and up)."""
        return self.opcode >= Opcode.CLOSE


@dataclass(frozen=True)
class Close:
    """What a server's close frame said: its code (None for an empty body) and reason."""

    code: int | None
    reason: str


class ServerFrameDecoder:
    """Splits the bytes a server sent into frames, failing on anything RFC 6455 forbids a
    server to send (a mask, RSV bits without an extension, a reserved opcode, a control frame
    fragmented or over 125 bytes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        fin, rsv, opcode = bool(first & 0x80), (first >> 4) & 0x7, first & 0xF
        assert not second & 0x80, "the server masked a frame (RFC 6455 §5.1 forbids it)"
        assert rsv == 0, f"the server set RSV bits {rsv:#05b} without an extension"
        assert opcode in set(Opcode), f"the server sent reserved opcode {opcode}"
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,), offset = struct.unpack_from("!H", buffer, 2), 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,), offset = struct.unpack_from("!Q", buffer, 2), 10
        if len(buffer) < offset + length:
            return None
        frame = Frame(opcode, bytes(buffer[offset : offset + length]), fin)
        del buffer[: offset + length]
        if frame.is_control:
            assert fin, f"the server fragmented a control frame (opcode {opcode})"
            assert length <= MAX_CONTROL_PAYLOAD, f"the server sent a {length}-byte control frame"
        return frame


def parse_close(frame: Frame) -> Close:
    """The code and reason of a server's close frame, checked against RFC 6455 §5.5.1/§7.4."""
    payload = frame.payload
    assert len(payload) != 1, "the server sent a close frame with a 1-byte body"
    if not payload:
        return Close(None, "")
    (code,) = struct.unpack_from("!H", payload)
    assert is_sendable_close_code(code), f"the server sent close code {code}, which may not be sent"
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise AssertionError(f"the server's close reason is not UTF-8: {payload[2:]!r}") from error
    return Close(code, reason)


class HandshakeRefused(Exception):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"upgrade refused with {status_code}: {body[:200]!r}")
        self.status_code = status_code
        self.body = body


@dataclass
class RawClient:
    """One upgraded connection over a bare socket: write any bytes, read checked frames."""

    stream: trio.SocketStream
    decoder: ServerFrameDecoder = field(default_factory=ServerFrameDecoder)
    pongs: list[bytes] = field(default_factory=list)
    """Payloads of the pongs read so far (read past by `receive_text` and `receive_close`)."""

    async def send(self, data: bytes) -> None:
        """Write raw bytes: frames from `encode_frame`, or a part of one."""
        await self.stream.send_all(data)

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """Write one frame (`encode_frame`'s options: fin, rsv, masked)."""
        await self.send(encode_frame(opcode, payload, **options))

    async def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        """Write a close frame."""
        await self.send_frame(Opcode.CLOSE, close_payload(code, reason))

    async def receive_frame(self, timeout_s: float = READ_TIMEOUT_S) -> Frame:
        """The next frame, within `timeout_s`; EOF or a reset before it is an AssertionError."""
        with trio.fail_after(timeout_s):
            while (frame := self.decoder.next_frame()) is None:
                data = await self._receive_some("a frame")
                assert data, "the server closed TCP without a close frame (a browser sees 1006)"
                self.decoder.feed(data)
            return frame

    async def receive_text(self, timeout_s: float = READ_TIMEOUT_S) -> str:
        """The next text message, reassembled from its fragments; pongs met on the way go to
        `pongs`, pings are answered as a browser would, a close frame is an AssertionError."""
        with trio.fail_after(timeout_s):
            parts: list[bytes] = []
            while True:
                frame = await self.receive_frame(timeout_s)
                if frame.opcode == Opcode.PONG:
                    self.pongs.append(frame.payload)
                elif frame.opcode == Opcode.PING:
                    await self.send_frame(Opcode.PONG, frame.payload)
                elif frame.opcode == Opcode.CLOSE:
                    raise AssertionError(f"the server closed instead: {parse_close(frame)}")
                else:
                    expected = Opcode.CONTINUATION if parts else Opcode.TEXT
                    assert frame.opcode == expected, f"unexpected opcode {frame.opcode}"
                    parts.append(frame.payload)
                    if frame.fin:
                        return b"".join(parts).decode("utf-8")

    async def receive_json(self, timeout_s: float = READ_TIMEOUT_S) -> dict[str, Any]:
        """The next text message, as JSON."""
        message = orjson.loads(await self.receive_text(timeout_s))
        assert isinstance(message, dict), message
        return message

    async def receive_until(self, message_type: str) -> dict[str, Any]:
        """The first JSON message of `message_type`, skipping the others (welcome, events)."""
        while (message := await self.receive_json())["type"] != message_type:
            pass
        return message

    async def receive_pong(self, timeout_s: float = READ_TIMEOUT_S) -> bytes:
        """The payload of the next pong, skipping data messages on the way."""
        with trio.fail_after(timeout_s):
            while True:
                frame = await self.receive_frame(timeout_s)
                if frame.opcode == Opcode.PONG:
                    return frame.payload
                assert frame.opcode != Opcode.CLOSE, f"closed instead: {parse_close(frame)}"

    async def receive_close(self, timeout_s: float = READ_TIMEOUT_S) -> Close:
        """The server's close frame, skipping the data messages and pongs before it."""
        with trio.fail_after(timeout_s):
            while True:
                frame = await self.receive_frame(timeout_s)
                if frame.opcode == Opcode.CLOSE:
                    return parse_close(frame)
                if frame.opcode == Opcode.PONG:
                    self.pongs.append(frame.payload)

    async def receive_eof(self, timeout_s: float = READ_TIMEOUT_S) -> None:
        """Wait for the server to close TCP cleanly (FIN) after its close frame.

        Anything more than a FIN is an AssertionError: bytes after the close frame (RFC 6455
        §5.5.1 forbids them), a reset (the peer may lose the close frame), or a timeout.
        """
        with trio.fail_after(timeout_s):
            while data := await self._receive_some("EOF"):
                self.decoder.feed(data)
            assert not self.decoder.pending, "the server sent bytes after its close frame"

    async def closed_by_server(self, *, echo: bool = True) -> Close:
        """The close the server started: its close frame, our reply to it as a browser sends
        one (`echo`), then a clean TCP close. The server's close is returned."""
        close = await self.receive_close()
        if echo:
            await self.send_close(close.code)
        await self.receive_eof()
        return close

    async def _receive_some(self, waiting_for: str) -> bytes:
        try:
            return await self.stream.receive_some()
        except trio.BrokenResourceError as error:
            raise AssertionError(
                f"the connection was reset while waiting for {waiting_for}, not closed cleanly"
            ) from error

    async def reset(self) -> None:
        """Vanish abruptly: close the socket with an RST instead of a FIN (SO_LINGER 0)."""
        self.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


def accept_token(key: bytes) -> bytes:
    """The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())


async def upgrade(
    stream: trio.SocketStream, host: str, path: str = "/ws", *, first_frames: bytes = b""
) -> bytes:
    """Do the opening handshake over `stream` with h11; the bytes read past the 101's head
    (the first frames) are returned. Raises `HandshakeRefused` for any other answer.

    `first_frames` go right behind the request, in the same write, as a client that does not
    wait for the 101 may send them."""
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    http = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    head = http.send(request) + (http.send(h11.EndOfMessage()) or b"")
    await stream.send_all(head + first_frames)
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some())
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                break
            elif isinstance(event, h11.Response):
                body = b""
                while isinstance(part := http.next_event(), h11.Data):
                    body += part.data
                raise HandshakeRefused(event.status_code, body)
    headers = {name.lower(): value for name, value in event.headers}
    assert headers.get(b"upgrade", b"").lower() == b"websocket", headers
    assert b"upgrade" in headers.get(b"connection", b"").lower(), headers
    assert headers.get(b"sec-websocket-accept") == accept_token(key.encode()), headers
    assert b"sec-websocket-extensions" not in headers, "an extension nobody asked for"
    data, _closed = http.trailing_data
    return bytes(data)


@asynccontextmanager
async def raw_client(
    host: str, port: int, path: str = "/ws", *, first_frames: bytes = b""
) -> AsyncIterator[RawClient]:
    """An upgraded bare-socket connection to `host:port`, closed (FIN) on exit; `first_frames`
    are sent with the upgrade request."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        client = RawClient(stream)
        client.decoder.feed(
            await upgrade(stream, f"{host}:{port}", path, first_frames=first_frames)
        )
        yield client
