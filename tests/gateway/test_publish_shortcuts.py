"""The publish API's shortcuts give what the general way gives: the bearer-key check compares
the usual `Bearer <key>` as bytes, and a body is validated straight into events."""

from __future__ import annotations

from datetime import datetime, timedelta

import h11
import pytest
import trio

from sigma.gateway.publish import (
    PublishApi,
    bearer_header_of,
    check_api_key,
    events_of_body,
    parse_publish_body,
)
from sigma.http.request import HttpError, HttpRequest
from sigma.hub.intake import HubIntake
from sigma.hub.messages import HubMessage


def request_with(authorization: bytes | None) -> HttpRequest:
    headers = [(b"host", b"x")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    raw = h11.Request(method="POST", target="/api/publish", headers=headers)
    return HttpRequest("POST", "/api/publish", "/api/publish", {}, tuple(headers), raw)


def api_with(key: str) -> PublishApi:
    inbox, _ = trio.open_memory_channel[HubMessage](8)  # never used: only the key is checked
    return PublishApi(HubIntake(inbox), key=key, wait_s=1.0, reply_timeout_s=1.0)


@pytest.mark.parametrize("key", ["s3cret", "with space", " padded ", "clé", "Bearer x"])
@pytest.mark.parametrize(
    "presented",
    [
        None,
        b"",
        b"Bearer s3cret",
        b"Bearer  s3cret",
        b"s3cret",
        b"bearer s3cret",
        b"Bearer s3cre",
        b"Bearer with space",
        b"Bearer  padded",
        b"Bearer padded",
        "Bearer clé".encode("latin-1"),
        "Bearer clé".encode(),
        b"Bearer Bearer x",
        b"Bearer x",
    ],
)
def test_the_fast_check_agrees_with_check_api_key(key: str, presented: bytes | None) -> None:
    request = request_with(presented)
    assert api_with(key).authorised(request) is check_api_key(request, key)


def test_the_usual_header_is_accepted_without_the_slow_path() -> None:
    assert bearer_header_of("s3cret") == b"Bearer s3cret"
    assert bearer_header_of(" padded ") is None
    assert bearer_header_of("clé") is None
    assert api_with("s3cret").authorised(request_with(b"Bearer s3cret"))


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "notification", "data": {"a": 1}}',
        b' \n{"type": "agent_status", "data": {"agent_id": "x", "n": [1, 2.5, null]}}',
        b'[{"type": "notification", "data": {}}, {"type": "heartbeat", "data": {"b": "c"}}]',
        b'\t [{"type": "notification", "data": {"k": {"deep": true}}}]',
        b"[]",
        b'{"type": "supervision", "data": {}}',
        b'{"type": "notification", "data": {}, "timestamp": "2026-01-01T00:00:00+00:00"}',
        b'{"type": "notification", "data": {}, "seq": 3}',
        b'{"type": "notification", "data": {}, "snapshot": true}',
        b'[{"type": "notification", "data": {}}, {"type": "notification", "data": {}, "seq": 1}]',
        b'{"type": "nope", "data": {}}',
        b'{"type": "notification"}',
        b'{"type": "notification", "data": []}',
        b'[{"type": "notification", "data": {}}, 7]',
        b'{"type": "notification", "data": {}',
        b"not json",
        b"",
        b"null",
        b"42",
        b'"text"',
        b'[{"type": "notification", "data": {}}]]',
    ],
)
def test_events_of_a_body_are_what_parsing_items_gives(body: bytes) -> None:
    expected: object
    try:
        parsed = parse_publish_body(body)
    except HttpError as error:
        expected = (error.status, error.error, error.detail)
    else:
        items = parsed if isinstance(parsed, list) else [parsed]
        expected = ([(item.type, item.data) for item in items], isinstance(parsed, list))
    found: object
    try:
        events, as_list = events_of_body(body)
    except HttpError as error:
        found = (error.status, error.error, error.detail)
    else:
        for event in events:
            assert event.seq is None and not event.snapshot
            assert datetime.fromisoformat(event.timestamp).utcoffset() == timedelta(0)
        found = ([(event.type, event.data) for event in events], as_list)
    assert found == expected
