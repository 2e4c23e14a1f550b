"""TLS on the gateway port, end to end with `trustme` certificates: `wss://` and `https://` for
clients that trust the CA, refusal for those that do not, protected mode over TLS, the
configuration's one-line errors, and `sigma check` / `sigma watch` with `--cafile`."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
import structlog.testing
import trio
import trustme
import websockets.asyncio.client
from cryptography.hazmat.primitives import serialization
from helpers import API_KEY, Stack, make_config, running_stack
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from sigma.cli.main import main
from sigma.config import AuthConfig, FaultsConfig, GatewayConfig, HeartbeatConfig, parse_config
from sigma.errors import ConfigError
from sigma.heartbeat import run_heartbeat

SECRET = "correct-horse-battery-staple-0123456789"
HANDSHAKE_TIMEOUT_S = 0.5
WS_HEADERS = {
    "connection": "Upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@dataclass(frozen=True)
class Pki:
    """A private CA, the gateway's certificate and key from it, and a stranger's key."""

    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    stranger = trustme.CA().issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    (folder / "cert.pem").write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(folder / "key.pem"))
    stranger.private_key_pem.write_to_path(str(folder / "other-key.pem"))
    return Pki(
        ca,
        folder / "ca.pem",
        folder / "cert.pem",
        folder / "key.pem",
        folder / "other-key.pem",
    )


def tls_gateway(pki: Pki, **overrides: Any) -> GatewayConfig:
    return GatewayConfig(
        port=0,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
        **overrides,
    )


@asynccontextmanager
async def tls_stack(pki: Pki, **sections: Any) -> AsyncIterator[Stack]:
    config = make_config(gateway=tls_gateway(pki), **sections)
    async with running_stack(config, verify=pki.client_context()) as stack:
        assert stack.ws_url.startswith("wss://") and stack.gateway.http_url.startswith("https://")
        yield stack


# --- wss:// and https:// for a client that trusts the CA -----------------------------------------


def websockets_over_wss(ws_url: str, http_url: str, ca_file: Path) -> list[dict[str, Any]]:
    """An independent client (`websockets`, asyncio) in its own thread: the welcome, then three
    batches published over `https://`, each read in full before the next is sent."""
    context = ssl.create_default_context(cafile=str(ca_file))

    async def session() -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async with (
            websockets.asyncio.client.connect(ws_url, ssl=context) as ws,
            httpx.AsyncClient(base_url=http_url, verify=context) as http,
        ):
            received.append(orjson.loads(await ws.recv()))
            for batch in range(3):
                events = [{"type": "notification", "data": {"b": batch, "i": i}} for i in range(50)]
                response = await http.post(
                    "/api/publish",
                    content=orjson.dumps(events),
                    headers={"authorization": f"Bearer {API_KEY}"},
                )
                assert response.status_code == 200, response.text
                for _ in events:
                    received.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5.0)))
        return received

    return asyncio.run(session())


async def test_websockets_client_over_wss_gets_the_welcome_and_live_events(pki: Pki) -> None:
    # Each batch reaches a client whose sender is parked, where a plain socket gets the hub's
    # direct write: over TLS every byte must still go through the TLS stream, or this client's
    # TLS layer would fail on the first record.
    async with tls_stack(pki) as stack:
        welcome, *events = await trio.to_thread.run_sync(
            websockets_over_wss, stack.ws_url, stack.gateway.http_url, pki.ca_file
        )
    assert welcome["data"]["kind"] == "welcome"
    assert [event["seq"] for event in events] == list(range(1, 151))
    assert [event["data"] for event in events[:2]] == [{"b": 0, "i": 0}, {"b": 0, "i": 1}]


async def test_health_and_metrics_over_https(pki: Pki) -> None:
    async with tls_stack(pki) as stack:
        health = await stack.http.get("/health")
        metrics = await stack.http.get("/metrics")
        again = await stack.http.get("/health")  # the same TLS connection, kept alive
        status, report = stack.health.report()
    assert health.status_code == status == 200
    assert health.json()["status"] == report["status"] and health.json().keys() == report.keys()
    assert metrics.status_code == 200 and "sigma_" in metrics.text
    assert again.status_code == 200


async def test_a_closing_session_completes_the_close_handshake_over_tls(pki: Pki) -> None:
    async with (
        tls_stack(pki) as stack,
        open_websocket_url(stack.ws_url, ssl_context=pki.client_context()) as ws,
    ):
        with trio.fail_after(5):
            welcome = orjson.loads(await ws.get_message())
            await stack.sessions.terminate_child(welcome["data"]["client_id"])
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1001
    assert closed.value.reason.reason == "server shutting down"


# --- refused: clients that do not trust the CA, or do not speak TLS -------------------------------


async def test_a_client_that_does_not_trust_the_ca_is_refused_and_others_go_on(pki: Pki) -> None:
    with structlog.testing.capture_logs() as logs:
        async with (
            tls_stack(pki) as stack,
            open_websocket_url(stack.ws_url, ssl_context=pki.client_context()) as trusted,
        ):
            orjson.loads(await trusted.get_message())  # welcome
            with pytest.raises(trio.BrokenResourceError) as refused:
                untrusting = await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", stack.gateway.port, ssl_context=ssl.create_default_context()
                )
                async with untrusting:
                    await untrusting.do_handshake()
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient(base_url=stack.gateway.http_url) as stranger:
                    await stranger.get("/health")
            assert await stack.publish({"type": "notification", "data": {"n": 1}}) == {"seq": 1}
            with trio.fail_after(5):
                event = orjson.loads(await trusted.get_message())
            assert event["seq"] == 1
            async with open_websocket_url(stack.ws_url, ssl_context=pki.client_context()) as late:
                with trio.fail_after(5):
                    assert orjson.loads(await late.get_message())["data"]["kind"] == "welcome"
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    failed = [entry for entry in logs if entry["event"] == "TLS handshake failed"]
    assert failed and all(entry["log_level"] == "debug" for entry in failed)
    assert all(entry["peer"] == "127.0.0.1" for entry in failed)


async def read_until_closed(stream: trio.SocketStream, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after `timeout_s`)."""
    received = b""
    with trio.fail_after(timeout_s):
        while True:
            try:
                chunk = await stream.receive_some()
            except trio.BrokenResourceError:  # a reset is a close too
                return received
            if not chunk:
                return received
            received += chunk


async def test_plain_http_and_a_stalled_handshake_are_dropped_and_others_go_on(pki: Pki) -> None:
    async with tls_stack(pki) as stack:
        port = stack.gateway.port
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        async with plain, stalled:
            await plain.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            assert b"HTTP/" not in await read_until_closed(plain, 5.0)
            started = trio.current_time()
            assert await read_until_closed(stalled, 5.0) == b""
            waited_s = trio.current_time() - started
            assert HANDSHAKE_TIMEOUT_S * 0.5 <= waited_s < HANDSHAKE_TIMEOUT_S + 2.0
        assert (await stack.http.get("/health")).status_code == 200


# --- protected mode over TLS ---------------------------------------------------------------------


async def test_protected_mode_still_applies_over_tls(pki: Pki) -> None:
    auth = AuthConfig(mode="jwt", jwt_secret=SECRET)
    good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    async with tls_stack(pki, auth=auth) as stack:
        refused = await stack.http.get("/ws", headers=WS_HEADERS)
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(stack.ws_url, ssl_context=pki.client_context()):
                pass
        async with open_websocket_url(
            stack.ws_url,
            ssl_context=pki.client_context(),
            extra_headers=[(b"authorization", f"Bearer {good}".encode())],
        ) as ws:
            with trio.fail_after(5):
                assert orjson.loads(await ws.get_message())["data"]["kind"] == "welcome"
    assert refused.status_code == 401
    assert refused.json()["error"] == "missing_token"
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert rejected.value.status_code == 401


# --- configuration: one line, exit 2 -------------------------------------------------------------


def gateway_errors(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config({"gateway": raw}, source="sigma.toml")
    message = str(error.value)
    assert "\n" not in message
    return message


def test_certificate_and_key_come_together(pki: Pki) -> None:
    assert gateway_errors({"tls_cert_file": str(pki.cert_file)}) == (
        "sigma.toml: gateway.tls_key_file: required when tls_cert_file is set "
        "(give both, or neither)"
    )
    assert gateway_errors({"tls_key_file": str(pki.key_file)}) == (
        "sigma.toml: gateway.tls_key_file: needs tls_cert_file too (give both, or neither)"
    )
    config = parse_config(
        {"gateway": {"tls_cert_file": str(pki.cert_file), "tls_key_file": str(pki.key_file)}}
    )
    assert config.gateway.tls and not parse_config({}).gateway.tls


def test_files_that_are_not_a_certificate_or_a_key_are_named(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    assert gateway_errors(
        {"tls_cert_file": str(pki.key_file), "tls_key_file": str(pki.key_file)}
    ) == (f"sigma.toml: gateway.tls_cert_file: {pki.key_file} holds no PEM certificate")
    assert gateway_errors({"tls_cert_file": str(pki.cert_file), "tls_key_file": str(junk)}) == (
        f"sigma.toml: gateway.tls_key_file: {junk} holds no PEM private key"
    )
    assert gateway_errors({"tls_cert_file": str(tmp_path), "tls_key_file": str(junk)}) == (
        f"sigma.toml: gateway.tls_cert_file: cannot read {tmp_path}: Is a directory"
    )


def test_an_encrypted_key_is_refused_with_a_reason(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key_file.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert gateway_errors({"tls_cert_file": str(pki.cert_file), "tls_key_file": str(locked)}) == (
        f"sigma.toml: gateway.tls_key_file: {locked} is encrypted; "
        "give the gateway an unencrypted key"
    )


def write_config(tmp_path: Path, cert: Path, key: Path) -> Path:
    path = tmp_path / "tls.toml"
    path.write_text(f'[gateway]\nport = 0\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    return path


@pytest.mark.parametrize(
    ("case", "command"),
    [
        ("missing certificate", "config check"),
        ("key of another certificate", "config check"),
        ("key of another certificate", "serve"),
    ],
)
def test_config_errors_are_one_line_and_exit_2(
    pki: Pki, tmp_path: Path, case: str, command: str
) -> None:
    if case == "missing certificate":
        missing = tmp_path / "missing.pem"
        path = write_config(tmp_path, missing, pki.key_file)
        expected = f"gateway.tls_cert_file: cannot read {missing}: No such file or directory"
    else:
        path = write_config(tmp_path, pki.cert_file, pki.other_key_file)
        expected = (
            f"gateway.tls_key_file: {pki.other_key_file} is not the private key of the "
            f"certificate in {pki.cert_file}"
        )
    argv = (
        ["config", "check", str(path)]
        if command == "config check"
        else ["serve", "--config", str(path)]
    )
    done = subprocess.run(
        [sys.executable, "-m", "sigma", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == f"sigma: {path}: {expected}\n"
    assert done.stdout == ""


# --- the client tools: wss:// with --cafile ------------------------------------------------------


@asynccontextmanager
async def beating_tls_stack(pki: Pki) -> AsyncIterator[Stack]:
    beat = HeartbeatConfig(interval_s=0.1, ping_interval_s=3600.0)
    async with tls_stack(pki, heartbeat=beat) as stack, trio.open_nursery() as nursery:
        await nursery.start(run_heartbeat, beat, stack.hub_send)
        yield stack
        nursery.cancel_scope.cancel()


def status_line(out: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith("SIGMA ")]
    return line


async def test_sigma_check_over_wss_with_cafile(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    async with beating_tls_stack(pki) as stack:
        argv = ["check", "--url", stack.ws_url, "--timeout", "5", "--cafile", str(pki.ca_file)]
        trusted = await trio.to_thread.run_sync(main, argv)
        trusted_line = status_line(capsys.readouterr().out)
        untrusted = await trio.to_thread.run_sync(main, [*argv[:4], "1"])
        untrusted_line = status_line(capsys.readouterr().out)
    assert trusted == 0, trusted_line
    assert trusted_line.startswith("SIGMA OK - heartbeat seq=")
    assert untrusted == 2
    assert untrusted_line.startswith(
        "SIGMA CRITICAL - gateway unavailable: cannot connect: TLS certificate not accepted: "
    )
    assert "certificate" in untrusted_line.removeprefix("SIGMA CRITICAL - gateway unavailable")


def test_sigma_check_cafile_usage_errors_are_unknown(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"
    assert main(["check", "--url", "wss://127.0.0.1:1/ws", "--cafile", str(missing)]) == 3
    assert capsys.readouterr().out == (
        f"SIGMA UNKNOWN - usage: --cafile {missing}: file not found\n"
    )
    assert main(["check", "--url", "ws://127.0.0.1:1/ws", "--cafile", str(pki.ca_file)]) == 3
    assert "--cafile is for wss:// URLs" in capsys.readouterr().out
    not_a_ca = tmp_path / "junk.pem"
    not_a_ca.write_text("junk\n")
    assert main(["check", "--url", "wss://127.0.0.1:1/ws", "--cafile", str(not_a_ca)]) == 3
    assert "no CA certificate can be read" in capsys.readouterr().out


async def test_sigma_watch_over_wss_with_cafile(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    async with beating_tls_stack(pki) as stack:
        argv = ["watch", "--url", stack.ws_url, "--cafile", str(pki.ca_file)]
        argv += ["--no-live", "--max-seconds", "0.5"]
        status = await trio.to_thread.run_sync(main, argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "connected: epoch" in out and "heartbeat" in out
    with pytest.raises(SystemExit) as usage:
        main(["watch", "--url", "ws://127.0.0.1:1/ws", "--cafile", str(pki.ca_file)])
    assert usage.value.code == 2


async def test_sigma_fault_over_https_with_cafile(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    async with tls_stack(pki, faults=FaultsConfig(admin=True)) as stack:
        argv = ["fault", "list", "--url", stack.gateway.http_url, "--cafile", str(pki.ca_file)]
        trusted = await trio.to_thread.run_sync(main, argv)
        listed = capsys.readouterr().out
        untrusted = await trio.to_thread.run_sync(main, argv[:-2])
        refused = capsys.readouterr().err
    assert trusted == 0 and "sender.write" in listed and "disarmed" in listed
    assert untrusted == 1 and "CERTIFICATE_VERIFY_FAILED" in refused
    assert main(["fault", "list", "--url", "http://127.0.0.1:1", "--cafile", "x.pem"]) == 2
    assert "--cafile is for https:// URLs" in capsys.readouterr().err
