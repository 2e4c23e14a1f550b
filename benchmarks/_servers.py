"""Start and stop the servers under test, each in its own process on 127.0.0.1.

- `sigma`: `python -m sigma serve --config <temp file> --host 127.0.0.1 --port <free port>` with
  the publish API on, no embedded engine (`embedded = false` and an unreachable `url`), nothing
  polled, heartbeats hourly, pings hourly, large client queues, log level warning.
- `sigma-tls`: the same Sigma with `[gateway] tls_cert_file`/`tls_key_file`, a certificate for
  127.0.0.1 issued by a throwaway `trustme` CA (written to the temporary folder); clients and
  the publisher trust that CA (`Server.ca_file`) and speak `wss://` and `https://`.
- `websockets`: `_peers/ws_asyncio_server.py` under the same Python.
- `node`: `_peers/ws_node_server.js` with `ws` installed by `npm install ws` into a temporary
  folder (once per benchmark run); unavailable when node or npm is missing or the install fails.
- `h11-floor`: `_peers/h11_floor_server.py`, trio and h11 answering every HTTP request as Sigma
  answers a publish, and doing nothing else: the floor under Sigma's publish path
  (`publish_cost.py --servers sigma,h11-floor`).
- `fanout-floor`: `_peers/fanout_floor_server.py`, trio, h11 and wsproto taking Sigma's publishes
  and writing each event, framed once, to every subscriber, and doing nothing else: the floor
  under Sigma's fan-out (`fanout.py --servers sigma,fanout-floor,node`).

Every server runs in its own session (so a Ctrl-C in the terminal reaches only the benchmark,
which then stops it) and is stopped with SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
API_KEY = "bench-key"
PEERS_DIR = Path(__file__).resolve().parent / "_peers"
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
"""Starts of one server, each on a newly picked port, before a port taken by others is fatal."""
STOP_TIMEOUT_S = 10.0

SIGMA_CONFIG = """\
[gateway]
host = "127.0.0.1"
port = {port}
{tls}
[engine]
embedded = false
url = "http://127.0.0.1:9/rpc"

[poller.intervals_s]

[heartbeat]
interval_s = 3600.0
ping_interval_s = 3600.0
ping_timeout_s = 60.0

[hub]
queue_size = {queue_size}

[api]
key = "{api_key}"

[logging]
level = "warning"
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server under test."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    ws_path: str
    publish_kind: str
    """`http` (Sigma's POST /api/publish) or `ws` (a control WebSocket)."""
    log_path: Path
    ca_file: str | None = None
    """The CA certificate that clients trust when the server speaks TLS; None: plain TCP."""

    @property
    def pid(self) -> int:
        """The server's process id (what CPU and RSS are measured on)."""
        return self.process.pid

    @property
    def publish_url(self) -> str:
        """Where the publisher connects."""
        if self.publish_kind == "http":
            return f"{'https' if self.ca_file else 'http'}://{HOST}:{self.port}"
        return f"ws://{HOST}:{self.port}/publish"

    def ps(self) -> psutil.Process:
        """A psutil handle on the server process."""
        return psutil.Process(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's output, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


class ServerFactory:
    """Knows how to start each kind of server; owns the temporary files they need."""

    def __init__(
        self,
        workdir: Path,
        sigma_queue_size: int,
        sigma_ref: str = "",
        launcher: tuple[str, ...] = (),
    ) -> None:
        """`launcher`: a command that runs the Python of `sigma` and `h11-floor` under it (e.g.
        valgrind)."""
        self.workdir = workdir
        self.launcher = launcher
        self.sigma_queue_size = sigma_queue_size
        self._node_modules: Path | None = None
        self._node_problem: str | None = None
        self._sigma_src: Path | None = None
        self._sigma_commit: str | None = None
        self._tls_files: tuple[Path, Path, Path] | None = None
        if sigma_ref:
            self._sigma_src, self._sigma_commit = _extract_sigma(sigma_ref, workdir)

    def node_available(self, log: Callable[[str], None]) -> str | None:
        """Install `ws` once; None when node can run, else why not."""
        if self._node_modules is not None or self._node_problem is not None:
            return self._node_problem
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            self._node_problem = "node or npm is not on PATH"
            return self._node_problem
        target = Path(tempfile.mkdtemp(prefix="npm-ws-", dir=self.workdir))
        log(f"installing ws with npm into {target} ...")
        try:
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                    "--prefix",
                    str(target),
                    "ws",
                ],
                capture_output=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self._node_problem = "npm install ws timed out"
            return self._node_problem
        if done.returncode != 0 or not (target / "node_modules" / "ws").is_dir():
            detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            self._node_problem = f"npm install ws failed: {detail[0]}"
            return self._node_problem
        self._node_modules = target / "node_modules"
        return None

    def versions(self) -> dict[str, str]:
        """Versions of the servers that will be run."""
        import websockets

        out = {"python": sys.version.split()[0], "websockets": websockets.__version__}
        with contextlib.suppress(Exception):
            import sigma

            out["sigma"] = sigma.__version__
        if self._sigma_commit is not None:
            out["sigma_commit"] = f"{self._sigma_commit} (--sigma-ref)"
        else:
            out["sigma_commit"] = _working_tree_commit()
        if self._node_modules is not None:
            with contextlib.suppress(Exception):
                import json

                package = json.loads((self._node_modules / "ws" / "package.json").read_text())
                out["ws"] = package["version"]
                out["node"] = subprocess.run(
                    ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
                ).stdout.strip()
        return out

    def tls_files(self) -> tuple[Path, Path, Path]:
        """(CA certificate, server certificate, server key) for 127.0.0.1, made once per run."""
        if self._tls_files is None:
            import trustme

            ca = trustme.CA()
            issued = ca.issue_cert(HOST)
            ca_file, cert_file, key_file = (
                self.workdir / name for name in ("ca.pem", "cert.pem", "key.pem")
            )
            ca.cert_pem.write_to_path(str(ca_file))
            cert_file.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
            issued.private_key_pem.write_to_path(str(key_file))
            self._tls_files = (ca_file, cert_file, key_file)
        return self._tls_files

    def start(self, name: str) -> Server:
        """Start `name` (sigma, sigma-tls, websockets, node, h11-floor or fanout-floor) on a free
        port; return once it listens.

        The port is picked free, then released for the server to bind: another process may take
        it in between. The server then fails to start, and is started again on another port
        (up to `START_ATTEMPTS` times).
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start_on(name, free_port())
            except PortTaken:
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _start_on(self, name: str, port: int) -> Server:
        log_path = self.workdir / f"{name}-{port}.log"
        env = dict(os.environ)
        ca_file: str | None = None
        if name in ("sigma", "sigma-tls"):
            tls = ""
            if name == "sigma-tls":
                ca, cert, key = self.tls_files()
                ca_file = str(ca)
                tls = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
            config = self.workdir / f"{name}-{port}.toml"
            config.write_text(
                SIGMA_CONFIG.format(
                    port=port, queue_size=self.sigma_queue_size, api_key=API_KEY, tls=tls
                )
            )
            argv = [*self.launcher, sys.executable, "-m", "sigma", "serve"]
            argv += ["--config", str(config)]
            argv += ["--host", HOST, "--port", str(port)]
            ws_path, publish_kind = "/ws", "http"
            if self._sigma_src is not None:
                env["PYTHONPATH"] = str(self._sigma_src)  # ahead of the editable install
        elif name == "websockets":
            argv = [sys.executable, str(PEERS_DIR / "ws_asyncio_server.py"), str(port)]
            ws_path, publish_kind = "/ws", "ws"
        elif name == "h11-floor":
            floor = PEERS_DIR / "h11_floor_server.py"
            argv = [*self.launcher, sys.executable, str(floor), str(port)]
            ws_path, publish_kind = "", "http"
        elif name == "fanout-floor":
            floor = PEERS_DIR / "fanout_floor_server.py"
            argv = [*self.launcher, sys.executable, str(floor), str(port)]
            ws_path, publish_kind = "/ws", "http"
        elif name == "node":
            if self._node_modules is None:
                raise RuntimeError("node peer requested but ws is not installed")
            argv = ["node", str(PEERS_DIR / "ws_node_server.js"), str(port)]
            env["NODE_PATH"] = str(self._node_modules)
            ws_path, publish_kind = "/ws", "ws"
        else:
            raise ValueError(f"unknown server {name!r}")
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        server = Server(name, process, port, ws_path, publish_kind, log_path, ca_file)
        try:
            _wait_listening(server, START_TIMEOUT_S * (10 if self.launcher else 1))
        except BaseException:
            server.stop()
            raise
        return server


def _working_tree_commit() -> str:
    git = ["git", "-C", str(REPO_ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "sigma"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes in sigma/" if dirty else "")


def _extract_sigma(ref: str, workdir: Path) -> tuple[Path, str]:
    """Extract `sigma/` at git `ref` into `workdir` (read-only for the repository)."""
    import io
    import tarfile

    git = ["git", "-C", str(REPO_ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        [*git, "archive", "--format=tar", commit, "sigma"], capture_output=True, check=True
    ).stdout
    target = workdir / f"sigma-src-{commit}"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, commit


class PortTaken(RuntimeError):
    """The server could not listen: another process took its port first."""


def _wait_listening(server: Server, timeout_s: float) -> None:
    """Return once the server's own process listens on its port (not merely someone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_tail()
            kind = PortTaken if "Address already in use" in tail else RuntimeError
            raise kind(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        if _listens(server.ps(), server.port):
            time.sleep(0.3)  # let the rest of the process finish starting
            return
        time.sleep(0.05)
    raise TimeoutError(f"{server.name} did not listen on {server.port} in {timeout_s} s")


def _listens(process: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        for connection in process.net_connections("tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                return True
    return False
