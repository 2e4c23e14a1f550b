"""Authentication at the edge, end to end: JWTs at the handshake, claims, expiry and refresh,
origins, protected mode, and secrets kept out of logs and printed configuration."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import structlog
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import API_KEY, Stack, make_config, running_stack
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from sigma.cli.main import main
from sigma.config import AuthConfig, Config, parse_config
from sigma.errors import ConfigError
from sigma.log import configure_logging
from sigma.protocol.event_types import EVENT_TYPES

SECRET = "correct-horse-battery-staple-0123456789"
WS_HEADERS = {
    "connection": "Upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}
DROP = object()


@pytest.fixture(autouse=True)
def no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGMA_JWT_SECRET", raising=False)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_public_key(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(key))
    return path


def claims(exp_in_s: float = 60.0, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sub": "alice",
        "iss": "sigma-auth",
        "aud": "sigma",
        "exp": int(time.time() + exp_in_s),
        **overrides,
    }
    return {name: value for name, value in payload.items() if value is not DROP}


def token(
    key: Any = SECRET, algorithm: str = "HS256", exp_in_s: float = 60.0, **overrides: Any
) -> str:
    return jwt.encode(claims(exp_in_s, **overrides), key, algorithm=algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(
    header: dict[str, Any], payload: dict[str, Any], key: bytes | None = None
) -> str:
    """A token built by hand: `alg: none`, or HS256 with any bytes as the HMAC key."""
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(payload))}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64url(signature)}"


def jwt_config(**auth: Any) -> Config:
    return make_config(auth=AuthConfig(mode="jwt", jwt_secret=SECRET, **auth))


def bearer(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {value}".encode())]


async def receive_json(ws: WebSocketConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        return orjson.loads(await ws.get_message())  # type: ignore[no-any-return]


async def handshake(stack: Stack, *, target: str = "/ws", **headers: str) -> tuple[int, Any, Any]:
    """An upgrade request by plain HTTP: (status, JSON body, response headers)."""
    response = await stack.http.get(target, headers={**WS_HEADERS, **headers})
    return response.status_code, response.json(), response.headers


async def assert_refused(stack: Stack, error: str, *, target: str = "/ws", **headers: str) -> str:
    sessions_before = stack.sessions.count_children().active
    status, body, response_headers = await handshake(stack, target=target, **headers)
    assert status == 401, body
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    assert response_headers["www-authenticate"].startswith("Bearer error=")
    assert stack.sessions.count_children().active <= sessions_before  # nothing was upgraded
    return str(body["detail"])


# --- refused at the handshake ------------------------------------------------------------------


def hs256_refusals() -> list[tuple[str, dict[str, str], str]]:
    other_key = "another-secret-that-is-long-enough-000000"
    return [
        ("missing", {}, "missing_token"),
        ("malformed", {"authorization": "Bearer not-a-jwt"}, "invalid_token"),
        ("three garbage parts", {"authorization": "Bearer a.b.c"}, "invalid_token"),
        ("not bearer", {"authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ("bearer without token", {"authorization": "Bearer"}, "invalid_token"),
        ("expired", {"authorization": f"Bearer {token(exp_in_s=-60)}"}, "token_expired"),
        (
            "not yet valid",
            {"authorization": f"Bearer {token(nbf=int(time.time()) + 600)}"},
            "token_not_yet_valid",
        ),
        ("wrong signature", {"authorization": f"Bearer {token(key=other_key)}"}, "invalid_token"),
        (
            "alg none",
            {"authorization": "Bearer " + unsigned_token({"alg": "none", "typ": "JWT"}, claims())},
            "invalid_token",
        ),
        ("no exp", {"authorization": f"Bearer {token(exp=DROP)}"}, "invalid_token"),
        ("exp not a number", {"authorization": f"Bearer {token(exp='soon')}"}, "invalid_token"),
        ("wrong issuer", {"authorization": f"Bearer {token(iss='mallory')}"}, "invalid_token"),
        ("no issuer", {"authorization": f"Bearer {token(iss=DROP)}"}, "invalid_token"),
        ("wrong audience", {"authorization": f"Bearer {token(aud='elsewhere')}"}, "invalid_token"),
        ("no audience", {"authorization": f"Bearer {token(aud=DROP)}"}, "invalid_token"),
        ("types not a list", {"authorization": f"Bearer {token(types=5)}"}, "invalid_token"),
        ("sub not a string", {"authorization": f"Bearer {token(sub=7)}"}, "invalid_token"),
        ("huge token", {"authorization": "Bearer " + "a" * 10_000}, "invalid_token"),
    ]


@pytest.mark.parametrize("case", [case for case, _, _ in hs256_refusals()])
async def test_hs256_bad_tokens_get_401_with_json_and_nothing_upgraded(case: str) -> None:
    # The tokens are made now, not when tests are collected: on a slow run a minute may pass
    # in between, and a token meant to be bad in another way would be refused as expired.
    headers, error = next((h, e) for name, h, e in hs256_refusals() if name == case)
    async with running_stack(
        jwt_config(issuer="sigma-auth", audience="sigma", leeway_s=0)
    ) as stack:
        detail = await assert_refused(stack, error, **headers)
        assert detail  # says why, in words
        assert SECRET not in detail


async def test_a_good_token_is_still_taken_after_refusals_on_the_same_connection() -> None:
    async with running_stack(jwt_config(issuer="sigma-auth", audience="sigma")) as stack:
        await assert_refused(stack, "missing_token")
        good = token()
        async with open_websocket_url(stack.ws_url, extra_headers=bearer(good)) as ws:
            assert (await receive_json(ws))["data"]["kind"] == "welcome"


async def test_token_in_the_query_string_and_header_precedence() -> None:
    async with running_stack(jwt_config()) as stack:
        async with open_websocket_url(f"{stack.ws_url}?token={token()}") as ws:
            assert (await receive_json(ws))["data"]["kind"] == "welcome"
        await assert_refused(stack, "invalid_token", target="/ws?token=garbage")
        # A header, when present, is what counts: a bad header is not rescued by a good query.
        await assert_refused(
            stack, "invalid_token", target=f"/ws?token={token()}", authorization="Bearer nope"
        )


async def test_a_websocket_client_sees_the_401_status_and_body() -> None:
    async with running_stack(jwt_config()) as stack:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(stack.ws_url, extra_headers=bearer(token(exp_in_s=-60))):
                pass
        assert rejected.value.status_code == 401
        body = orjson.loads(rejected.value.body or b"")
        assert body == {"error": "token_expired", "detail": "the token has expired (exp)"}


async def test_rs256_accepts_its_key_and_refuses_key_confusion_and_hs256(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = write_public_key(tmp_path, rsa_key)
    config = make_config(auth=AuthConfig(mode="jwt", algorithm="RS256", public_key_file=key_file))
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with running_stack(config) as stack:
        async with open_websocket_url(
            stack.ws_url, extra_headers=bearer(token(rsa_key, "RS256"))
        ) as ws:
            assert (await receive_json(ws))["data"]["kind"] == "welcome"
        # HS/RS key confusion: HS256 "signed" with the RSA public key (which anyone can read).
        confused = unsigned_token({"alg": "HS256", "typ": "JWT"}, claims(), key=public_pem(rsa_key))
        detail = await assert_refused(stack, "invalid_token", authorization=f"Bearer {confused}")
        assert "algorithm" in detail
        await assert_refused(stack, "invalid_token", authorization=f"Bearer {token()}")
        await assert_refused(
            stack, "invalid_token", authorization=f"Bearer {token(other_rsa, 'RS256')}"
        )
        alg_none = unsigned_token({"alg": "none"}, claims())
        await assert_refused(stack, "invalid_token", authorization=f"Bearer {alg_none}")


async def test_es256_accepts_its_key_and_refuses_rs256(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = write_public_key(tmp_path, ec_key)
    config = make_config(auth=AuthConfig(mode="jwt", algorithm="ES256", public_key_file=key_file))
    async with running_stack(config) as stack:
        async with open_websocket_url(
            stack.ws_url, extra_headers=bearer(token(ec_key, "ES256"))
        ) as ws:
            assert (await receive_json(ws))["data"]["kind"] == "welcome"
        await assert_refused(
            stack, "invalid_token", authorization=f"Bearer {token(rsa_key, 'RS256')}"
        )


# --- claims limit subscriptions ----------------------------------------------------------------


async def test_types_claim_limits_welcome_and_subscriptions() -> None:
    async with running_stack(jwt_config()) as stack:
        limited = token(types=["heartbeat", "system_status", "weather"])
        async with open_websocket_url(stack.ws_url, extra_headers=bearer(limited)) as ws:
            welcome = await receive_json(ws)
            assert welcome["data"]["subscriptions"] == ["heartbeat", "system_status"]
            await ws.send_message('{"action": "subscribe", "types": ["rpc_error"], "id": "s"}')
            reply = await receive_json(ws)
            assert reply["type"] == "error"
            assert (reply["data"]["code"], reply["data"]["request_id"]) == ("forbidden", "s")
            await ws.send_message('{"action": "ping", "id": "alive"}')
            assert (await receive_json(ws))["data"]["request_id"] == "alive"
            await stack.publish(
                [{"type": "rpc_error", "data": {}}, {"type": "heartbeat", "data": {}}]
            )
            event = await receive_json(ws)
            assert (event["type"], event["seq"]) == ("heartbeat", 2)


async def test_no_types_claim_means_every_core_type_and_a_string_claim_is_split() -> None:
    async with running_stack(jwt_config(types_claim="scope")) as stack:
        async with open_websocket_url(stack.ws_url, extra_headers=bearer(token())) as ws:
            assert (await receive_json(ws))["data"]["subscriptions"] == sorted(EVENT_TYPES)
        scoped = token(scope="heartbeat agent_status openid")
        async with open_websocket_url(stack.ws_url, extra_headers=bearer(scoped)) as ws:
            assert (await receive_json(ws))["data"]["subscriptions"] == [
                "agent_status",
                "heartbeat",
            ]


# --- expiry and refresh during a connection ----------------------------------------------------


async def wait_for_close(ws: WebSocketConnection, timeout_s: float) -> tuple[int, str | None]:
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(timeout_s):
        while True:
            await ws.get_message()
    reason = closed.value.reason
    return reason.code, reason.reason


async def test_session_closes_with_4001_when_the_token_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expiring = bearer(token(exp_in_s=30))
    async with (
        running_stack(jwt_config(leeway_s=0)) as stack,
        open_websocket_url(stack.ws_url, extra_headers=expiring) as ws,
    ):
        await receive_json(ws)
        opened = trio.current_time()
        assert await wait_for_close(ws, 120) == (4001, "token expired")
        assert 28 <= trio.current_time() - opened <= 31


async def send_refresh(ws: WebSocketConnection, new_token: str, request_id: str) -> dict[str, Any]:
    await ws.send_message(
        orjson.dumps({"action": "refresh", "token": new_token, "id": request_id}).decode()
    )
    return await receive_json(ws)


async def test_refresh_extends_the_session(autojump_clock: trio.testing.MockClock) -> None:
    expiring = bearer(token(exp_in_s=30))
    async with (
        running_stack(jwt_config(leeway_s=0)) as stack,
        open_websocket_url(stack.ws_url, extra_headers=expiring) as ws,
    ):
        await receive_json(ws)
        opened = trio.current_time()
        await trio.sleep(20)
        later = claims(exp_in_s=300)
        reply = await send_refresh(ws, jwt.encode(later, SECRET, algorithm="HS256"), "r1")
        assert reply["type"] == "notification" and reply["seq"] is None
        assert reply["data"] == {
            "kind": "token_refreshed",
            "expires_at": datetime.fromtimestamp(later["exp"], UTC).isoformat(),
            "request_id": "r1",
        }
        await trio.sleep(100)  # well past the first token's exp
        await ws.send_message('{"action": "ping", "id": "p"}')
        assert (await receive_json(ws))["type"] == "pong"
        assert await wait_for_close(ws, 400) == (4001, "token expired")
        assert 310 <= trio.current_time() - opened <= 321  # refreshed at 20 s, for 300 s


async def test_bad_refreshes_get_errors_and_the_old_deadline_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_stack(jwt_config(leeway_s=0)) as stack:
        first = token(exp_in_s=30, types=["heartbeat", "notification"])
        async with open_websocket_url(stack.ws_url, extra_headers=bearer(first)) as ws:
            await receive_json(ws)
            opened = trio.current_time()
            refusals = [
                (token(exp_in_s=300, sub="bob"), "forbidden"),
                (token(exp_in_s=300, types=["heartbeat"]), "forbidden"),
                (
                    token(exp_in_s=300, key="wrong-secret-that-is-long-enough-00000"),
                    "invalid_token",
                ),
                (token(exp_in_s=-60), "invalid_token"),
                ("garbage", "invalid_token"),
            ]
            replies = [await send_refresh(ws, bad, f"r{n}") for n, (bad, _) in enumerate(refusals)]
            for number, (reply, (_, code)) in enumerate(zip(replies, refusals, strict=True)):
                assert reply["type"] == "error", reply
                assert (reply["data"]["code"], reply["data"]["request_id"]) == (code, f"r{number}")
            assert replies[3]["data"]["message"].startswith("token_expired")
            assert await wait_for_close(ws, 120) == (4001, "token expired")
            assert trio.current_time() - opened <= 31


async def test_refresh_without_authentication_is_an_error() -> None:
    async with running_stack() as stack, open_websocket_url(stack.ws_url) as ws:
        await receive_json(ws)
        reply = await send_refresh(ws, token(), "r")
        assert reply["type"] == "error"
        assert (reply["data"]["code"], reply["data"]["request_id"]) == ("invalid_message", "r")
        await ws.send_message('{"action": "refresh", "id": 2}')
        assert (await receive_json(ws))["data"]["code"] == "invalid_message"


# --- origins -----------------------------------------------------------------------------------


async def test_origin_check() -> None:
    config = make_config(auth=AuthConfig(allowed_origins=("https://app.example",)))
    async with running_stack(config) as stack:
        for origin in [None, "https://evil.example", "https://app.example.evil"]:
            headers = {} if origin is None else {"origin": origin}
            status, body, _ = await handshake(stack, **headers)
            assert (status, body["error"]) == (403, "forbidden_origin"), origin
            assert body["detail"]
        headers = [(b"origin", b"https://app.example")]
        async with open_websocket_url(stack.ws_url, extra_headers=headers) as ws:
            assert (await receive_json(ws))["data"]["kind"] == "welcome"


# --- configuration -----------------------------------------------------------------------------


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, source="sigma.toml")
    return str(error.value)


def test_jwt_mode_needs_a_long_enough_secret_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert config_error({"auth": {"mode": "jwt"}}) == (
        'sigma.toml: auth: mode = "jwt" with HS256 needs jwt_secret (or $SIGMA_JWT_SECRET)'
    )
    assert "at least 32 bytes" in config_error({"auth": {"mode": "jwt", "jwt_secret": "short"}})
    monkeypatch.setenv("SIGMA_JWT_SECRET", SECRET)
    config = parse_config({"auth": {"mode": "jwt", "jwt_secret": "from-the-file-" * 3}})
    assert config.auth.jwt_secret == SECRET


def test_public_key_file_must_be_a_readable_public_key_of_the_right_kind(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    def rs256(path: Path | None) -> dict[str, Any]:
        auth: dict[str, Any] = {"mode": "jwt", "algorithm": "RS256"}
        if path is not None:
            auth["public_key_file"] = str(path)
        return {"auth": auth}

    assert config_error(rs256(None)).endswith('mode = "jwt" with RS256 needs public_key_file')
    missing = tmp_path / "missing.pem"
    assert f"cannot read {missing}" in config_error(rs256(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    assert "is not an RSA public key in PEM form" in config_error(rs256(garbage))
    private = tmp_path / "private.pem"
    private.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert "holds a private key" in config_error(rs256(private))
    ec_file = write_public_key(tmp_path, ec_key)
    assert "is not an RSA public key" in config_error(rs256(ec_file))
    for message in [config_error(rs256(p)) for p in (missing, garbage, private, ec_file)]:
        assert "\n" not in message
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(public_pem(rsa_key))
    assert parse_config(rs256(rsa_file)).auth.algorithm == "RS256"


PROTECTED_MESSAGE = (
    "gateway.host: refusing to listen on {host} without authentication; "
    'set [auth] mode = "jwt" or [auth] allow_insecure = true'
)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "::ffff:10.0.0.1"]
)
def test_protected_mode_refuses_open_hosts_without_auth(host: str) -> None:
    message = config_error({"gateway": {"host": host}})
    assert message == "sigma.toml: " + PROTECTED_MESSAGE.format(host=host)
    assert parse_config({"gateway": {"host": host}, "auth": {"allow_insecure": True}})
    assert parse_config({"gateway": {"host": host}, "auth": {"mode": "jwt", "jwt_secret": SECRET}})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"])
def test_protected_mode_allows_loopback(host: str) -> None:
    assert parse_config({"gateway": {"host": host}}).gateway.host == host


def test_serve_refuses_an_open_host_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "open.toml"
    path.write_text('[gateway]\nhost = "0.0.0.0"\n')
    assert main(["serve", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"sigma: {path}: {PROTECTED_MESSAGE.format(host='0.0.0.0')}\n"
    path.write_text("[gateway]\nport = 0\n")
    assert main(["serve", "--config", str(path), "--host", "0.0.0.0"]) == 2
    assert PROTECTED_MESSAGE.format(host="0.0.0.0") in capsys.readouterr().err


def test_secrets_are_hidden_in_repr_dumps_and_errors() -> None:
    config = make_config(auth=AuthConfig(mode="jwt", jwt_secret=SECRET))
    assert SECRET not in repr(config) and SECRET not in str(config)
    dumped = config.redacted_dump()
    assert dumped["auth"]["jwt_secret"] == "***" and dumped["api"]["key"] == "***"
    assert (
        SECRET not in orjson.dumps(dumped).decode() and API_KEY not in orjson.dumps(dumped).decode()
    )
    assert Config().redacted_dump()["auth"]["jwt_secret"] == ""  # unset stays visibly unset
    assert dumped["gateway"] == config.model_dump(mode="json")["gateway"]
    wrong_type = config_error({"api": {"key": 123456789}})
    assert "123456789" not in wrong_type and wrong_type.startswith("sigma.toml: api.key: ")


# --- secrets never reach the logs --------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    previous = structlog.get_config()
    output = io.StringIO()
    configure_logging("debug", "console", stream=output)
    try:
        yield output
    finally:
        structlog.configure(**previous)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_log_redaction_by_key_and_inside_text(fmt: str) -> None:
    previous = structlog.get_config()
    output = io.StringIO()
    configure_logging("debug", fmt, stream=output)
    secret_token = token()
    try:
        log = structlog.get_logger("test")
        log.info(
            "Request",
            target=f"/ws?since=3&token={secret_token}",
            headers={"Authorization": f"Bearer {secret_token}", "Host": "x"},
            header_list=[("authorization", "Bearer plain-bearer-secret")],
            token="raw-token-secret",
            jwt_secret=SECRET,
            Authorization="Bearer header-key-secret",
        )
        log.info(f"Message quoting {secret_token} and ?api_key=query-key-secret")
        try:
            raise ValueError(f"could not use token {secret_token}")
        except ValueError:
            log.exception("Failed")
    finally:
        structlog.configure(**previous)
    text = output.getvalue()
    for secret in (
        secret_token,
        "plain-bearer-secret",
        "raw-token-secret",
        SECRET,
        "header-key-secret",
        "query-key-secret",
    ):
        assert secret not in text, secret
    assert "***" in text and "since=3" in text and "ValueError" in text


async def test_no_secret_reaches_the_logs_of_a_running_gateway(log_output: io.StringIO) -> None:
    config = make_config(auth=AuthConfig(mode="jwt", jwt_secret=SECRET))
    good, bad = token(), token(key="wrong-secret-that-is-long-enough-00000")
    async with running_stack(config) as stack:
        async with open_websocket_url(f"{stack.ws_url}?token={good}") as ws:
            await receive_json(ws)
            await send_refresh(ws, bad, "r")
            await send_refresh(ws, good, "r2")
            await stack.publish({"type": "heartbeat", "data": {}})
        await assert_refused(stack, "invalid_token", target=f"/ws?token={bad}")
        await assert_refused(stack, "invalid_token", authorization=f"Bearer {bad}")
    text = log_output.getvalue()
    assert "Handshake refused" in text
    for secret in (good, bad, SECRET, API_KEY):
        assert secret not in text
