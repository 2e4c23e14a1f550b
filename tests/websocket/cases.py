"""The RFC 6455 cases, as bytes to send and scenarios to play over a `RawClient`.

Shared by `test_rfc6455.py` (against Sigma) and `test_rawclient.py` (against the `websockets`
library's server, which shows that every case can pass and that the raw client reads the
server's side right). Each scenario assumes a server with Sigma's client actions (`ping`,
`subscribe`), a welcome as the first message and a message limit of `MAX_FRAME_BYTES`.

In the spirit of the Autobahn testsuite's categories: framing (1002), UTF-8 (1007), limits
(1009), unsupported data (1003), the close handshake, and peers that vanish.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import orjson
from rawclient import Opcode, RawClient, close_payload, encode_frame, fragments

MAX_FRAME_BYTES = 1024
NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009


def ping_message(request_id: str = "p", size: int | None = None) -> bytes:
    """An application ping `{"action": "ping", "id": ...}`, its id padded to `size` bytes."""
    message = orjson.dumps({"action": "ping", "id": request_id})
    if size is not None:
        message = orjson.dumps({"action": "ping", "id": request_id + "x" * (size - len(message))})
        assert len(message) == size
    return message


TEXT = ping_message("bad")

PROTOCOL_ERRORS = {
    "ping-over-125-bytes": encode_frame(Opcode.PING, b"x" * 126),
    "pong-over-125-bytes": encode_frame(Opcode.PONG, b"x" * 126),
    "close-over-125-bytes": encode_frame(Opcode.CLOSE, close_payload(1000, b"x" * 124)),
    "fragmented-ping": encode_frame(Opcode.PING, b"a", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"b"),
    "fragmented-close": encode_frame(Opcode.CLOSE, close_payload(1000), fin=False)
    + encode_frame(Opcode.CONTINUATION, b""),
    "unmasked-text": encode_frame(Opcode.TEXT, TEXT, masked=False),
    "unmasked-ping": encode_frame(Opcode.PING, b"hi", masked=False),
    **{f"rsv{bit}-text": encode_frame(Opcode.TEXT, TEXT, rsv=1 << (3 - bit)) for bit in (1, 2, 3)},
    "rsv-on-ping": encode_frame(Opcode.PING, b"hi", rsv=0b111),
    "rsv-on-continuation": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.CONTINUATION, TEXT[5:], rsv=0b100),
    **{
        f"reserved-opcode-{opcode}": encode_frame(opcode, b"reserved")
        for opcode in (*range(3, 8), *range(11, 16))
    },
    "reserved-opcode-inside-a-message": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(4, b"")
    + encode_frame(Opcode.CONTINUATION, TEXT[5:]),
    "continuation-with-nothing-to-continue": encode_frame(Opcode.CONTINUATION, TEXT),
    "unfinished-continuation-with-nothing-to-continue": encode_frame(
        Opcode.CONTINUATION, TEXT, fin=False
    ),
    "text-inside-a-fragmented-text": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.TEXT, TEXT[5:]),
    "binary-inside-a-fragmented-text": encode_frame(Opcode.TEXT, TEXT[:5], fin=False)
    + encode_frame(Opcode.BINARY, TEXT[5:]),
    "close-payload-of-one-byte": encode_frame(Opcode.CLOSE, b"\x03"),
    # Codes no endpoint may send (RFC 6455 §7.4.1, §7.4.2; Autobahn 7.9): never used (0, 999),
    # reserved or local-only (1004, 1005, 1006, 1015), unassigned protocol codes (the rest).
    **{
        f"close-code-{code}": encode_frame(Opcode.CLOSE, close_payload(code))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999)
    },
}

INVALID_UTF8 = {
    "0xff-byte": b"\xff",
    "lone-continuation-byte": b"\x80",
    "overlong-slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "beyond-u10ffff": b"\xf4\x90\x80\x80",
}
HEAD, TAIL = b'{"action": "ping", "id": "', b'"}'

INVALID_PAYLOADS = {
    **{
        f"text-{name}": encode_frame(Opcode.TEXT, HEAD + sequence + TAIL)
        for name, sequence in INVALID_UTF8.items()
    },
    **{
        f"fragmented-text-{name}": encode_frame(Opcode.TEXT, HEAD, fin=False)
        + encode_frame(Opcode.CONTINUATION, sequence + TAIL)
        for name, sequence in INVALID_UTF8.items()
    },
    "bad-continuation-byte-in-the-next-fragment": encode_frame(
        Opcode.TEXT, HEAD + b"\xe2", fin=False
    )
    + encode_frame(Opcode.CONTINUATION, b"(" + TAIL),
    "message-ends-inside-a-code-point": encode_frame(Opcode.TEXT, HEAD + TAIL + b"\xe2", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"\x82"),
    **{
        f"close-reason-{name}": encode_frame(
            Opcode.CLOSE, close_payload(1000, b"reason " + sequence)
        )
        for name, sequence in INVALID_UTF8.items()
    },
    "close-reason-cut-inside-a-code-point": encode_frame(
        Opcode.CLOSE, close_payload(1000, "€".encode()[:2])
    ),
}

TOO_BIG = ping_message("big", MAX_FRAME_BYTES + 1)

OVERSIZED = {
    "one-frame": encode_frame(Opcode.TEXT, TOO_BIG),
    "small-fragments": fragments(TOO_BIG, 64),
    "fragments-with-pings-between": fragments(TOO_BIG, 128, between=encode_frame(Opcode.PING)),
    # A header that announces a megabyte, then twice the limit of it: the server must not wait
    # for the rest.
    "announced-megabyte": encode_frame(Opcode.TEXT, b"x" * 2**20)[: 2 * MAX_FRAME_BYTES],
}

UNSUPPORTED = {
    "binary-frame": encode_frame(Opcode.BINARY, b"\x00binary"),
    "fragmented-binary": encode_frame(Opcode.BINARY, b"\x00bin", fin=False)
    + encode_frame(Opcode.CONTINUATION, b"ary"),
    "binary-json": encode_frame(Opcode.BINARY, TEXT),
}

FAILURES = {
    **{f"1002-{name}": (data, PROTOCOL_ERROR) for name, data in PROTOCOL_ERRORS.items()},
    **{f"1007-{name}": (data, INVALID_PAYLOAD) for name, data in INVALID_PAYLOADS.items()},
    **{f"1009-{name}": (data, MESSAGE_TOO_BIG) for name, data in OVERSIZED.items()},
    **{f"1003-{name}": (data, UNSUPPORTED_DATA) for name, data in UNSUPPORTED.items()},
}
"""Every input that must fail the connection, with the close code the peer must read."""

PARTIAL = {
    "right-after-the-handshake": b"",
    "after-one-header-byte": b"\x81",
    "inside-the-extended-length": encode_frame(Opcode.TEXT, b"x" * 300)[:3],
    "inside-the-mask-key": encode_frame(Opcode.TEXT, TEXT)[:4],
    "inside-the-payload": encode_frame(Opcode.TEXT, TEXT)[:12],
    "between-fragments": encode_frame(Opcode.TEXT, TEXT[:5], fin=False),
    "inside-a-close-frame": encode_frame(Opcode.CLOSE, close_payload(1000, b"bye"))[:5],
}
"""What a peer sends before it vanishes."""

VALID_CLOSE_CODES: tuple[int, ...] = (
    *(1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013),
    *(3000, 3999, 4000, 4999),
)
"""Codes a client may close with (Autobahn 7.7); the server answers with the same or 1000."""


# Scenarios: each plays one case over an upgraded client and asserts what the RFC demands.


async def expect_failure(client: RawClient, data: bytes, code: int) -> None:
    """Send `data`: the server must answer with a close frame of `code`, then close TCP."""
    await client.send(data)
    close = await client.closed_by_server()
    assert close.code == code, f"closed with {close.code} ({close.reason!r}), expected {code}"


async def fragmented_text_with_pings_between(client: RawClient) -> None:
    """A ping inside a fragmented message is answered at once; the message then is too."""
    head, middle, tail = b'{"action": "pi', b'ng", "id": "frag', b'mented"}'
    await client.receive_until("notification")  # the welcome
    await client.send(encode_frame(Opcode.TEXT, head, fin=False))
    await client.send_frame(Opcode.PING, b"first")
    assert await client.receive_pong() == b"first"
    await client.send(encode_frame(Opcode.CONTINUATION, middle, fin=False))
    await client.send_frame(Opcode.PING, b"second")
    await client.send(encode_frame(Opcode.CONTINUATION, tail))
    reply = await client.receive_until("pong")
    assert reply["data"]["request_id"] == "fragmented"
    if b"second" not in client.pongs:
        assert await client.receive_pong() == b"second"
    await client.send_close(NORMAL_CLOSURE)
    assert (await client.receive_close()).code == NORMAL_CLOSURE
    await client.receive_eof()


async def fragmented_subscribe(client: RawClient) -> None:
    """A subscribe in 7-byte fragments is reassembled and answered."""
    message = orjson.dumps({"action": "subscribe", "types": ["rpc_error"], "id": "s"})
    await client.send(fragments(message, 7))
    reply = await client.receive_until("subscriptions")
    assert reply["data"]["request_id"] == "s"
    assert "rpc_error" in reply["data"]["subscriptions"]


async def ping_with_125_bytes(client: RawClient) -> None:
    """A ping of the largest size allowed, and an empty one, get pongs with the same payload."""
    payload = secrets.token_bytes(125)
    await client.send_frame(Opcode.PING, payload)
    assert await client.receive_pong() == payload
    await client.send_frame(Opcode.PING)
    assert await client.receive_pong() == b""


async def unsolicited_pong(client: RawClient) -> None:
    """Pongs nobody asked for are ignored: the next message is answered."""
    await client.receive_until("notification")
    await client.send_frame(Opcode.PONG, b"nobody asked")
    await client.send_frame(Opcode.PONG)
    await client.send(encode_frame(Opcode.TEXT, ping_message("after-pong")))
    assert (await client.receive_until("pong"))["data"]["request_id"] == "after-pong"


VALID_UTF8_ID = "κόσμε-€-𝄞"
VALID_UTF8 = orjson.dumps({"action": "ping", "id": VALID_UTF8_ID})
assert VALID_UTF8.endswith('𝄞"}'.encode())  # so that [:-3] cuts inside the 4-byte 𝄞

UTF8_SPLITS = {
    "inside-a-code-point": [VALID_UTF8[:-3], VALID_UTF8[-3:]],
    "every-byte": [VALID_UTF8[i : i + 1] for i in range(len(VALID_UTF8))],
}


async def valid_utf8_split(client: RawClient, parts: list[bytes]) -> None:
    """Valid UTF-8 cut inside code points across fragments is accepted and answered."""
    for index, part in enumerate(parts):
        opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
        await client.send(encode_frame(opcode, part, fin=index == len(parts) - 1))
    assert (await client.receive_until("pong"))["data"]["request_id"] == VALID_UTF8_ID


async def exactly_max_frame_bytes(client: RawClient) -> None:
    """Messages of exactly the limit, in one frame or in fragments, are answered."""
    await client.send(encode_frame(Opcode.TEXT, ping_message("at-the-limit", MAX_FRAME_BYTES)))
    await client.send(fragments(ping_message("fragmented", MAX_FRAME_BYTES), 100))
    assert (await client.receive_until("pong"))["data"]["request_id"].startswith("at-the-limit")
    assert (await client.receive_until("pong"))["data"]["request_id"].startswith("fragmented")


async def client_closes_with_1000(client: RawClient) -> None:
    """The client's close 1000 is answered with 1000, then the server closes TCP."""
    await client.receive_until("notification")
    await client.send_close(NORMAL_CLOSURE, b"bye")
    assert (await client.receive_close()).code == NORMAL_CLOSURE
    await client.receive_eof()


async def client_closes_with(client: RawClient, code: int) -> None:
    """A close with a valid code (and a UTF-8 reason) is answered with that code or 1000."""
    await client.send_close(code, "κόσμε".encode())
    assert (await client.receive_close()).code in (code, NORMAL_CLOSURE)
    await client.receive_eof()


async def client_closes_empty(client: RawClient) -> None:
    """An empty close (no code) is answered with an empty close or 1000."""
    await client.send_close(None)
    assert (await client.receive_close()).code in (None, NORMAL_CLOSURE)
    await client.receive_eof()


async def no_wait_for_close_reply(client: RawClient) -> None:
    """Failing a connection, the server closes TCP without waiting for the close reply
    (RFC 6455 §7.1.7: it must not process anything more from the peer)."""
    await client.send_frame(Opcode.PING, b"x" * 126)
    assert (await client.closed_by_server(echo=False)).code == PROTOCOL_ERROR


async def discards_what_follows_an_error(client: RawClient) -> None:
    """Frames behind a protocol error, and more after the close, are discarded, without the
    reset that would cost the peer the close frame."""
    after = encode_frame(Opcode.TEXT, ping_message("ignored")) * 200
    await client.send(encode_frame(Opcode.TEXT, TEXT, rsv=0b100) + after)
    assert (await client.receive_close()).code == PROTOCOL_ERROR
    await client.send(after)
    await client.receive_eof()


async def vanish(client: RawClient, data: bytes, how: str) -> None:
    """Send `data` (part of a frame), then leave: with a FIN (`how="fin"`) or a reset."""
    await client.send(data)
    if how == "reset":
        await client.reset()
    else:
        await client.stream.aclose()


Scenario = Callable[[RawClient], Awaitable[None]]

ANSWERED: dict[str, Scenario] = {
    "fragmented-text-with-pings-between": fragmented_text_with_pings_between,
    "fragmented-subscribe": fragmented_subscribe,
    "ping-with-125-bytes": ping_with_125_bytes,
    "unsolicited-pong": unsolicited_pong,
    "exactly-max-frame-bytes": exactly_max_frame_bytes,
    "client-closes-with-1000": client_closes_with_1000,
    "client-closes-empty": client_closes_empty,
    "no-wait-for-close-reply": no_wait_for_close_reply,
    "discards-what-follows-an-error": discards_what_follows_an_error,
}
"""The scenarios that take nothing but the client."""
