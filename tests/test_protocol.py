"""Client frame decoding and server message encoding, as the wire contract fixes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from sigma.protocol.client_frames import (
    ListSubscriptions,
    Ping,
    ProtocolViolation,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)
from sigma.protocol.codes import ErrorCode
from sigma.protocol.event_types import CORE_EVENT_TYPES
from sigma.protocol.replies import WelcomeFields, encode_welcome, welcome
from sigma.protocol.server_messages import encode, encode_event, make_checked_event, make_event
from sigma.protocol.timestamps import utc_iso_of_micros, utc_now_iso


def test_decodes_every_action_and_keeps_the_request_id() -> None:
    assert decode_client_frame('{"action": "subscribe", "types": ["heartbeat"], "id": 7}') == (
        Subscribe(action="subscribe", types=["heartbeat"], id=7)
    )
    assert isinstance(
        decode_client_frame('{"action": "unsubscribe", "types": ["rpc_error"]}'), Unsubscribe
    )
    assert isinstance(decode_client_frame('{"action": "list_subscriptions"}'), ListSubscriptions)
    assert decode_client_frame('{"action": "ping", "id": "abc"}') == Ping(action="ping", id="abc")


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("not json", ErrorCode.INVALID_JSON, None),
        ("{", ErrorCode.INVALID_JSON, None),
        ("[1, 2]", ErrorCode.INVALID_MESSAGE, None),
        ('"subscribe"', ErrorCode.INVALID_MESSAGE, None),
        ('{"types": ["heartbeat"]}', ErrorCode.INVALID_MESSAGE, None),
        ('{"action": 5, "id": 1}', ErrorCode.INVALID_MESSAGE, 1),
        ('{"action": "dance", "id": "x"}', ErrorCode.UNKNOWN_ACTION, "x"),
        ('{"action": "subscribe", "types": ["weather"], "id": 2}', ErrorCode.UNKNOWN_EVENT_TYPE, 2),
        ('{"action": "subscribe", "types": "heartbeat"}', ErrorCode.INVALID_MESSAGE, None),
        ('{"action": "subscribe", "types": []}', ErrorCode.INVALID_MESSAGE, None),
        ('{"action": "subscribe"}', ErrorCode.INVALID_MESSAGE, None),
        ('{"action": "ping", "extra": 1}', ErrorCode.INVALID_MESSAGE, None),
        ('{"action": "ping", "id": [1]}', ErrorCode.INVALID_MESSAGE, None),
        (b"\x00\x01", ErrorCode.INVALID_MESSAGE, None),
    ],
)
def test_bad_frames_raise_the_contracts_error_code(
    frame: str | bytes, code: ErrorCode, request_id: object
) -> None:
    with pytest.raises(ProtocolViolation) as raised:
        decode_client_frame(frame)
    reply = orjson.loads(encode(raised.value.reply()))
    assert reply["type"] == "error"
    assert reply["seq"] is None
    assert reply["data"]["code"] == code.value
    assert reply["data"]["request_id"] == request_id
    assert reply["data"]["message"]


def test_event_encoding_has_iso_timestamp_with_offset_and_seq() -> None:
    event = make_event("system_status", {"cpu_usage": 12.5}).model_copy(update={"seq": 3})
    wire = orjson.loads(encode(event))
    assert wire["type"] == "system_status"
    assert wire["seq"] == 3
    assert wire["data"] == {"cpu_usage": 12.5}
    assert datetime.fromisoformat(wire["timestamp"]).utcoffset() is not None


@pytest.mark.parametrize(
    "data",
    [
        {"cpu_usage": 12.5, "cores": [1.0, 99.9], "host": "h\u00e9", "load": None, "ok": True},
        {"nested": {"deep": [{"a": 1}, {"b": [2, 3]}]}, "big": 2**62, "neg": -0.0},
        {"at": datetime(2026, 1, 28, 12, 0, tzinfo=UTC), "tags": ("a", "b")},
        {"kinds": {"x", "y"}},  # a set: orjson cannot, pydantic can
        {},
    ],
)
def test_encode_event_gives_the_bytes_of_the_numbered_copy(data: dict[str, object]) -> None:
    event = make_event("notification", data)
    assert encode_event(event, 7) == encode(event.model_copy(update={"seq": 7}))


def test_a_checked_event_encodes_like_a_validated_one() -> None:
    checked = make_checked_event("notification", {"n": 1})
    validated = make_event("notification", {"n": 1}).model_copy(
        update={"timestamp": checked.timestamp}
    )
    assert checked.seq is None
    assert encode_event(checked, 1) == encode_event(validated, 1)


WELCOME_CASES = [
    {"subscriptions": CORE_EVENT_TYPES, "recovered": None, "node": ""},
    {"subscriptions": frozenset({"heartbeat", "agent_status"}), "recovered": True, "node": "n-2"},
    {"subscriptions": frozenset(), "recovered": False, "node": "nœud-é"},
    {"subscriptions": CORE_EVENT_TYPES, "recovered": None, "node": "", "heartbeat_interval_s": 30},
    {"subscriptions": CORE_EVENT_TYPES, "recovered": None, "node": "", "last_seq": 2**70},
    {"subscriptions": CORE_EVENT_TYPES, "recovered": True, "heartbeat_interval_s": 0.1},
    {
        "subscriptions": CORE_EVENT_TYPES,
        "recovered": None,
        "last_heartbeat_at": "2026-01-28T12:50:30.101532+00:00",
    },
    {"subscriptions": CORE_EVENT_TYPES, "recovered": None, "client_count": 3},
]


@pytest.mark.parametrize("case", WELCOME_CASES)
def test_encoded_welcome_is_byte_for_byte_the_pydantic_rendering(case: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "client_id": "3f2a8c1e-0000-4000-8000-000000000001",
        "last_seq": 41,
        "epoch": 'e"1\\',
        "heartbeat_interval_s": 15.0,
        **case,
    }
    reference = welcome(WelcomeFields(**fields))  # type: ignore[arg-type]
    fast = encode_welcome(WelcomeFields(**fields), timestamp=reference.timestamp)  # type: ignore[arg-type]
    assert fast == encode(reference)


A_WELCOME = WelcomeFields(
    client_id="c1",
    subscriptions=CORE_EVENT_TYPES,
    last_seq=41,
    epoch="e1",
    heartbeat_interval_s=15.0,
    recovered=None,
)


def test_encoded_welcome_is_stamped_now() -> None:
    wire = orjson.loads(encode_welcome(A_WELCOME))
    stamped = datetime.fromisoformat(wire["timestamp"])
    assert stamped.tzinfo is not None
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_welcome_lists_sorted_subscriptions_and_contract_fields() -> None:
    wire = orjson.loads(encode(welcome(A_WELCOME)))
    data = wire["data"]
    assert wire["type"] == "notification" and wire["seq"] is None
    assert data["kind"] == "welcome"
    assert data["subscriptions"] == sorted(CORE_EVENT_TYPES)
    assert data["last_seq"] == 41 and data["epoch"] == "e1"
    assert data["heartbeat_interval"] == 15.0
    assert data["server_version"] == "0.1.0"
    assert "recovered" not in data
    assert "subscribed to all core events" in data["message"]


@pytest.mark.parametrize(
    "micros",
    [
        0,
        1,
        999_999,
        1_000_000,
        1_764_601_199_999_999,  # the last microsecond of a day, then the next day's first
        1_764_601_200_000_000,
        1_764_601_200_000_001,
        1_767_225_599_500_000,  # New Year's Eve, and the year after
        1_767_225_600_000_000,
        4_102_444_800_123_456,
    ],
)
def test_timestamps_are_what_datetime_writes(micros: int) -> None:
    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat()
    assert utc_iso_of_micros(micros) == expected
    assert utc_iso_of_micros(micros) == expected  # the second time from the kept second


def test_consecutive_timestamps_match_datetime_across_seconds() -> None:
    start = 1_764_601_198_999_990
    for micros in range(start, start + 2_000_020, 7_919):
        expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat()
        assert utc_iso_of_micros(micros) == expected


def test_now_is_stamped_in_utc_with_the_offset() -> None:
    stamped = datetime.fromisoformat(utc_now_iso())
    assert stamped.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
