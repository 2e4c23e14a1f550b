"""The publish API's bearer-key check: the bytes comparison of the usual `Bearer <key>` answers
as `check_api_key` does, for every form of the header and of the key."""

from __future__ import annotations

import h11
import pytest
import trio

from sigma.gateway.publish import PublishApi, bearer_header_of, check_api_key
from sigma.http import HttpRequest
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
