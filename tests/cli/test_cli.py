"""The `sigma` command: configuration errors, `config check`, and a clean stop on signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from sigma.cli.main import main
from sigma.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]

BAD_CONFIGS = [
    ("[supervisor]\nmax_restarts = -1\n", "supervisor.max_restarts: must be >= 0 (got -1)"),
    ("[gatewy]\nport = 1\n", "gatewy: unknown key"),
    ("[gateway]\nprot = 1\n", "gateway.prot: unknown key"),
    ('[gateway]\nport = "high"\n', "gateway.port: input should be a valid integer"),
    ("[gateway]\nport = 70000\n", "gateway.port: must be <= 65535 (got 70000)"),
    ('[hub]\nslow_client_policy = "nap"\n', "hub.slow_client_policy: must be one of"),
    (
        "[supervisor.backoff]\nmin_s = 2.0\nmax_s = 1.0\n",
        "supervisor.backoff: max_s must be >= min_s",
    ),
    ("[supervisor.backoff]\nfactor = 1.5\n", "supervisor.backoff.factor: must be <= 1.0 (got 1.5)"),
    ("[engine]\nembedded = false\n", "engine: url is required when embedded = false"),
    ("[gateway\nport = 1\n", "invalid TOML"),
    ('[broker]\nkind = "etcd"\n', "broker.kind: must be one of 'memory' or 'redis' (got 'etcd')"),
    (
        '[broker]\nurl = "http://10.0.0.5:6379"\n',
        "broker: url must start with redis://, rediss:// or unix:// (got 'http://10.0.0.5:6379')",
    ),
    ('[broker]\nurl = "redis://"\n', "broker: url needs a host, as in redis://host:6379/0"),
    ('[broker]\nurl = "redis://r:99999/0"\n', "broker: url has an invalid port"),
    ("[broker]\nlease_s = 0.1\n", "broker.lease_s: must be >= 0.3 (got 0.1)"),
    ('[broker]\nstream = "a b"\n', "broker.stream: string should match pattern"),
    ("[broker]\nleader = true\n", "broker.leader: unknown key"),
    (
        '[gateway]\nreuse_port = "yes please"\n',
        "gateway.reuse_port: input should be a valid boolean",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2(
    body: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"sigma: {path}: ")
    assert expected in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["serve", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == f"sigma: {missing}: file not found\n"


def test_config_check_of_a_bad_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[hub]\nqueue_size = 0\n")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"sigma: {path}: hub.queue_size: must be >= 1 (got 0)\n"


def test_port_override_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(REPO / "supervisor.toml"), "--port", "99999"]) == 2
    assert "gateway.port: must be <= 65535 (got 99999)" in capsys.readouterr().err


def test_environment_variable_names_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[hub]\nhistory_size = -5\n")
    monkeypatch.setenv("SIGMA_CONFIG", str(path))
    assert main(["serve"]) == 2
    assert str(path) in capsys.readouterr().err


def test_shipped_supervisor_toml_equals_the_embedded_defaults() -> None:
    assert load_config(REPO / "supervisor.toml") == Config()


def test_config_check_prints_a_config_that_loads_back_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(REPO / "supervisor.toml")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# {REPO / 'supervisor.toml'}: valid")
    echo = tmp_path / "echo.toml"
    echo.write_text(printed)
    assert load_config(echo) == Config()


FAULTS_CONFIG = """
[faults]
admin = true

[[faults.points]]
point = "poller.call"
action = "raise"
every = 3

[[faults.points]]
point = "heartbeat.tick"
action = "drop"
probability = 0.25
seed = 7
"""


def test_config_check_prints_fault_points_as_tables_that_load_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS_CONFIG)
    config = load_config(path)
    assert [spec.describe() for spec in config.faults.points] == [
        "raise every 3 hit(s)",
        "drop with probability 0.25 (seed 7)",
    ]
    assert main(["config", "check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[[faults.points]]") == 2
    echo = tmp_path / "echo.toml"
    echo.write_text(printed)
    assert load_config(echo) == config


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[faults.points]]\npoint = "nowhere"\naction = "raise"\n',
            "faults.points.0: unknown fault point 'nowhere'",
        ),
        (
            '[[faults.points]]\npoint = "hub.publish"\naction = "drop"\n',
            "faults.points.0: drop is not supported at hub.publish",
        ),
        ('[faults]\nadmin = "maybe"\n', "faults.admin: input should be a valid boolean"),
    ],
)
def test_bad_fault_config_is_one_line_and_exit_2(
    body: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_bad_config_through_the_real_command_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[supervisor]\nmax_restarts = -1\n")
    done = subprocess.run(
        [sys.executable, "-m", "sigma", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == f"sigma: {path}: supervisor.max_restarts: must be >= 0 (got -1)\n"


def serve_config(tmp_path: Path) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(
        f"""
[gateway]
port = 0
[engine]
port = 0
data_dir = "{tmp_path / "data"}"
[heartbeat]
interval_s = 0.2
[logging]
level = "debug"
format = "json"
"""
    )
    return path


ROOT_CHILDREN_IN_START_ORDER = ["engine", "hub", "sessions", "gateway", "poller", "heartbeat"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_in_reverse_order_closes_clients_with_1001_and_exits_0(
    signum: signal.Signals, tmp_path: Path
) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sigma", "serve", "--config", str(serve_config(tmp_path))],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    log = b""
    try:
        with trio.fail_after(30):
            while b"Sigma running" not in log:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, log.decode()
                log += chunk
        port = int(re.search(rb"ws://127\.0\.0\.1:(\d+)/ws", log).group(1))  # type: ignore[union-attr]
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            assert orjson.loads(await ws.get_message())["data"]["kind"] == "welcome"
            process.send_signal(signum)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(15):
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
        with trio.fail_after(30):
            while chunk := await process.stderr.receive_some(65536):
                log += chunk
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith(b"{")]
    stopped = [
        line["child"]
        for line in lines
        if line.get("supervisor") == "root" and line["event"].startswith("Child exited")
    ]
    assert stopped == list(reversed(ROOT_CHILDREN_IN_START_ORDER))
    assert lines[-1]["event"] == "Sigma stopped cleanly"


def test_config_check_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-" + "x" * 40
    path = tmp_path / "secret.toml"
    path.write_text(
        f'[auth]\nmode = "jwt"\njwt_secret = "{secret}"\n[api]\nkey = "publish-key-123"\n'
    )
    assert main(["config", "check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert secret not in printed and "publish-key-123" not in printed
    assert printed.count('"***"') == 2


def test_config_check_never_prints_the_redis_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('[broker]\nkind = "redis"\nurl = "redis://sigma:hunter2@10.0.0.7:6380/1"\n')
    assert main(["config", "check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "hunter2" not in printed
    assert "redis://sigma:***@10.0.0.7:6380/1" in printed
