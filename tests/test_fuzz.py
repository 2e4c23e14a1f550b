"""Fuzzing one connection with hostile frames while a neighbour keeps receiving every event.

Hypothesis draws structured frames (wrong types, huge numbers, deep nesting, odd unicode, raw
bytes); each is also sent in several random mutations (truncated, bytes flipped or inserted,
repeated). The server must answer every frame with exactly one direct reply and stay up, and the
neighbour must see contiguous `seq` throughout. Everything goes out as text frames: a binary
frame closes the connection with 1003, which tests/websocket shows case by case.
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
import trio
from helpers import Stack, make_config, running_stack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import WebSocketConnection, open_websocket_url

from sigma.config import AuthConfig, HubConfig, LimitsConfig
from sigma.gateway.auth import Authenticator, Claims, TokenRejected
from sigma.protocol.event_types import CORE_EVENT_TYPES, EVENT_TYPES
from sigma.protocol.replies import token_refreshed

SECRET = "fuzzing-secret-that-is-long-enough-0123456789"
EXAMPLES = 25
MUTATIONS_PER_FRAME = 7
MIN_DRAWN_FRAMES = 50
TOTAL_FRAMES_AT_LEAST = 10_000
MAX_FUZZ_FRAME_BYTES = 60_000  # under the 64 KiB frame limit: 1009 is tested on its own
ODD_TEXT = ["\u202e", "\ufeff", "\U0001f600", "\x00", "\u0301", "\uffff", "\\ud800", "\U0010ffff"]

Frame = str | bytes

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
action_objects = st.fixed_dictionaries(
    {
        "action": st.sampled_from(
            ["subscribe", "unsubscribe", "list_subscriptions", "ping", "refresh", "fly", "", "PING"]
        )
        | json_scalars,
    },
    optional={
        "id": json_values,
        "types": st.lists(st.sampled_from([*EVENT_TYPES, "weather"]) | json_scalars, max_size=4)
        | json_values,
        "token": json_values,
        "surprise": json_values,
    },
)


def dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity: not JSON, as hostile input


def nested(depth: int, dict_form: bool) -> str:
    if dict_form:
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


frames: st.SearchStrategy[Frame] = st.one_of(
    action_objects.map(dump),
    json_values.map(dump),
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda raw: raw.decode("utf-8", "replace")),
    st.tuples(st.integers(1, 5000), st.booleans()).map(lambda args: nested(*args)),
    st.integers(1, 5000).map(lambda digits: '{"action": "ping", "id": ' + "9" * digits + "}"),
    st.sampled_from(ODD_TEXT).map(lambda odd: '{"action": "' + odd + '"}'),
)


def mutations(frame: Frame, seed: int, count: int) -> list[Frame]:
    """Random variations of one frame; invalid UTF-8 is replaced (U+FFFD), so each stays text."""
    rng = random.Random(seed)
    base = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    variants: list[Frame] = []
    for _ in range(count):
        data = bytearray(base)
        operation = rng.randrange(6)
        if operation == 0 and data:
            del data[rng.randrange(len(data)) :]
        elif operation == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif operation == 2 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif operation == 3:
            data = data * rng.randint(2, 4)
        elif operation == 4:
            position = rng.randrange(len(data) + 1)
            data[position:position] = rng.choice(ODD_TEXT).encode("utf-8", "surrogatepass")
        else:
            data = bytearray(data.replace(b"1", str(rng.randrange(10**40)).encode()))
        del data[MAX_FUZZ_FRAME_BYTES:]
        variants.append(data.decode("utf-8", "replace"))
    return variants


async def receive_json(ws: WebSocketConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        return orjson.loads(await ws.get_message())  # type: ignore[no-any-return]


async def fuzz_once(to_send: list[Frame]) -> None:
    config = make_config(
        limits=LimitsConfig(messages_per_s=0),
        hub=HubConfig(queue_size=100_000),
        auth=AuthConfig(mode="jwt", jwt_secret=SECRET),  # so `refresh` frames reach the verifier
    )
    token = jwt.encode({"sub": "fuzz", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    url = f"{{}}?token={token}"
    async with (
        running_stack(config) as stack,
        open_websocket_url(url.format(stack.ws_url)) as neighbour,
        open_websocket_url(url.format(stack.ws_url)) as target,
    ):
        await receive_json(neighbour)
        await receive_json(target)
        await attack_while_neighbour_listens(stack, target, neighbour, to_send)


async def attack_while_neighbour_listens(
    stack: Stack, target: WebSocketConnection, neighbour: WebSocketConnection, to_send: list[Frame]
) -> None:
    end_marker = uuid.uuid4().hex
    direct_replies = 0
    published: list[int] = []

    async def send_frames() -> None:
        for frame in to_send:
            await target.send_message(frame)
        await target.send_message(orjson.dumps({"action": "ping", "id": end_marker}).decode())

    async def count_replies() -> None:
        nonlocal direct_replies
        while True:
            message = await receive_json(target)
            if message["seq"] is None:
                direct_replies += 1
                if message["type"] == "pong" and message["data"]["request_id"] == end_marker:
                    return

    async def keep_publishing() -> None:
        for _ in range(10):
            published.extend((await stack.publish([{"type": "heartbeat", "data": {}}] * 5))["seqs"])
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_frames)
        nursery.start_soon(count_replies)
        nursery.start_soon(keep_publishing)
    assert direct_replies == len(to_send) + 1  # one reply per frame: nothing lost, nothing closed
    seen = [(await receive_json(neighbour))["seq"] for _ in published]
    assert seen == published == list(range(1, len(published) + 1))


def test_fuzzed_frames_never_disturb_the_server_or_a_neighbour() -> None:
    sent: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        drawn=st.lists(
            st.tuples(frames, st.integers(0, 2**32)), min_size=MIN_DRAWN_FRAMES, max_size=70
        )
    )
    def fuzz(drawn: list[tuple[Frame, int]]) -> None:
        to_send: list[Frame] = []
        for frame, seed in drawn:
            to_send.append(frame)
            to_send.extend(mutations(frame, seed, MUTATIONS_PER_FRAME))
        trio.run(fuzz_once, to_send)
        sent.append(len(to_send))

    fuzz()
    assert len(sent) >= EXAMPLES  # every example ran (shrinking would only add runs)
    assert sum(sent) >= TOTAL_FRAMES_AT_LEAST, sum(sent)
    assert not math.isnan(sum(sent))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


claim_values = (
    json_values
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(min_value=4e9, max_value=1e300)
    | st.just(int(time.time()) + 60)
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    header_extra=st.one_of(
        st.just({}),
        st.just({}),
        st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "b64", "x"]), json_values),
    ),
    payload=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["exp", "nbf", "iat", "iss", "aud", "sub", "types", "x"]), claim_values
        ),
        st.fixed_dictionaries(  # mostly valid: the paths past the signature and exp checks
            {
                "exp": st.integers(int(time.time()) + 60, 2**40) | st.floats(4e9, 1e300),
                "iss": st.just("i"),
                "aud": st.just("a") | st.lists(st.just("a") | st.text(max_size=3), max_size=3),
            },
            optional={
                "nbf": claim_values,
                "iat": claim_values,
                "sub": st.text(max_size=10) | claim_values,
                "types": st.lists(st.sampled_from([*EVENT_TYPES, "x"]) | json_scalars, max_size=5)
                | st.text(max_size=30)
                | claim_values,
            },
        ),
    ),
    raw_header=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=30)),
    check_issuer=st.booleans(),
)
def test_the_verifier_only_ever_returns_claims_or_raises_token_rejected(
    header_extra: dict[str, Any], payload: Any, raw_header: bytes | None, check_issuer: bool
) -> None:
    """Correctly signed tokens with arbitrary headers and claims: no other exception escapes."""
    checks = {"issuer": "i", "audience": "a"} if check_issuer else {}
    authenticator = Authenticator(
        AuthConfig(mode="jwt", jwt_secret=SECRET, **checks), CORE_EVENT_TYPES
    )
    header = {"alg": "HS256", "typ": "JWT", **header_extra}
    encoded_header = b64url(raw_header) if raw_header is not None else b64url(dump(header).encode())
    signing_input = f"{encoded_header}.{b64url(dump(payload).encode())}"
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input.encode(), SECRET.encode()
    )
    try:
        claims = authenticator.verify(f"{signing_input}.{b64url(signature)}")
    except TokenRejected as rejected:
        assert rejected.error in {"invalid_token", "token_expired", "token_not_yet_valid"}
        assert rejected.detail
    else:
        assert isinstance(claims, Claims) and claims.allowed <= CORE_EVENT_TYPES
        assert math.isfinite(claims.expires_at)
        token_refreshed(datetime.fromtimestamp(claims.expires_at, UTC), None)  # what refresh sends
        assert claims.remaining_s(authenticator.leeway_s) >= 0
