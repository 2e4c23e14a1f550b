"""Soak test: `sigma serve` for N minutes under churn and injected faults, checked end to end.

Usage:
    python benchmarks/soak.py [--minutes 5] [--clients 50] [--rate 50] [--churn 5]
                              [--fault-every 15] [--report-every 15] [--json]

It starts `sigma serve` as a subprocess (a config of its own: free port, publish API and the
fault admin endpoint on, restart intensity loose enough for the faults below), then runs, all at
once, until the time is up:

- `--clients` long-lived clients that check every `seq` per epoch and resume with
  `?since=&epoch=` after a 1012 or an abnormal close, counting lost and duplicated events;
- churn: `--churn` connections a second that read a little and close (politely or not);
- a publisher: `--rate` events a second through `POST /api/publish`;
- a fault injector: every `--fault-every` seconds it arms the next fault of `FAULT_PLAN` through
  `POST /admin/faults` (crashes of each actor kind, a hang, a short engine outage).

Every `--report-every` seconds it prints the server's RSS, restarts and hangs (from `/metrics`),
clients, events checked, lost and duplicated. At the end it lets the clients catch up with a
last published event, stops the server with SIGTERM, and prints a summary: RSS growth after
warm-up, faults fired per point, restarts, events checked, lost, duplicated, and the exit status.
Exit status: 0 when nothing was lost or duplicated and the server exited 0; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psutil
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    open_websocket_url,
    wrap_client_stream,
)

FAULT_PLAN: list[dict[str, Any]] = [
    {"point": "poller.call", "action": "raise", "once": True},
    {"point": "hub.publish", "action": "raise", "once": True},
    {"point": "sender.write", "action": "raise", "every": 50},
    {"point": "heartbeat.tick", "action": "raise", "once": True},
    {"point": "engine.method", "action": "raise", "every": 3},
    {"point": "heartbeat.tick", "action": "hang", "once": True},
    {"point": "engine.method", "action": "drop"},  # an outage until the next fault is armed
    {"point": "sender.write", "action": "drop", "probability": 0.01, "seed": 7},
]
"""Armed in turn; each replaces what was armed before it (the previous point is cleared)."""
WARMUP_S = 60.0
"""RSS growth is measured from the first sample after this: by then the resume history is full
and the first hub restart has made every client reconnect once (allocator high-water marks)."""
CATCH_UP_S = 60.0
RESUMABLE = frozenset({1006, 1011, 1012})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, port: int, api_key: str) -> Path:
    path = directory / "soak.toml"
    path.write_text(
        f"""
[gateway]
port = {port}
[engine]
port = 0
data_dir = "{directory / "data"}"
[api]
key = "{api_key}"
[heartbeat]
interval_s = 1.0
ping_interval_s = 20.0
[poller]
timeout_s = 1.0
retry_max_s = 2.0
[poller.intervals_s]
"system.status" = 1.0
"storage.status" = 5.0
"agents.list" = 1.0
"compression.jobs.list" = 1.0
[supervisor]
max_restarts = 50
max_seconds = 10.0
watchdog_min_s = 3.0
[faults]
admin = true
[logging]
level = "info"
format = "json"
"""
    )
    return path


@dataclass
class Ledger:
    """One long-lived client's check of the stream (seq per epoch)."""

    epoch: str | None = None
    last_seq: int | None = None
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    resumes: int = 0
    unrecovered: int = 0
    closes: Counter[int] = field(default_factory=Counter)

    def welcome(self, data: dict[str, Any]) -> None:
        if self.epoch is None:
            self.epoch, self.last_seq = data["epoch"], data["last_seq"]
            return
        self.resumes += 1
        if data.get("recovered") is not True or data["epoch"] != self.epoch:
            self.unrecovered += 1  # a new epoch: the ledger cannot be checked across it
            self.epoch, self.last_seq = data["epoch"], data["last_seq"]

    def event(self, seq: int) -> None:
        assert self.last_seq is not None
        if seq <= self.last_seq:
            self.duplicated += 1
            return
        self.lost += seq - self.last_seq - 1
        self.last_seq = seq
        self.received += 1


async def long_lived_client(url: str, ledger: Ledger) -> None:
    """Stay connected; resume after a 1012 or an abnormal close; stop on 1000/1001."""
    while True:
        query = f"?since={ledger.last_seq}&epoch={ledger.epoch}" if ledger.epoch else ""
        code = 1006
        try:
            async with open_websocket_url(url + query) as ws:
                try:
                    ledger.welcome(orjson.loads(await ws.get_message())["data"])
                    while True:
                        seq = orjson.loads(await ws.get_message())["seq"]
                        if seq is not None:
                            ledger.event(seq)
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason is not None else 1006
        except (HandshakeError, OSError, trio.BrokenResourceError):
            await trio.sleep(0.2)
            continue
        ledger.closes[code] += 1
        if code not in RESUMABLE:
            return
        await trio.sleep(random.uniform(0.0, 0.1))


async def churn_client(url: str, rng: random.Random) -> str:
    """Connect, read a few frames, leave politely or by dropping the connection."""
    polite = rng.random() < 0.7
    reads = rng.randrange(1, 10)
    try:
        if polite:
            async with open_websocket_url(url) as ws:
                with trio.move_on_after(2.0):
                    for _ in range(reads):
                        await ws.get_message()
            return "polite"
        parts = urlsplit(url)
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, parts.netloc, parts.path or "/")
            with trio.move_on_after(2.0):
                for _ in range(reads):
                    await ws.get_message()
            await trio.aclose_forcefully(stream)  # the socket we own: gone without a close
            nursery.cancel_scope.cancel()
        return "vanished"
    except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
        return "failed"


@dataclass
class Soak:
    """The run's shared state and its parts."""

    args: argparse.Namespace
    ws_url: str
    http_url: str
    api_key: str
    pid: int
    ledgers: list[Ledger]
    churned: Counter[str] = field(default_factory=Counter)
    published: int = 0
    last_published_seq: int = 0
    armed: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def publish(self, http: httpx.AsyncClient, count: int) -> None:
        items = [
            {"type": "notification", "data": {"soak": self.published + n}} for n in range(count)
        ]
        response = await http.post(
            "/api/publish",
            content=orjson.dumps(items),
            headers={"authorization": f"Bearer {self.api_key}"},
            timeout=30.0,
        )
        response.raise_for_status()
        self.published += count
        self.last_published_seq = response.json()["seqs"][-1]

    async def publisher(self, http: httpx.AsyncClient) -> None:
        per_tick = max(1, round(self.args.rate / 10))
        deadline = trio.current_time()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self.publish(http, per_tick)
            deadline += per_tick / self.args.rate
            await trio.sleep_until(deadline)

    async def churner(self) -> None:
        rng = random.Random(20261125)
        async with trio.open_nursery() as nursery:
            while True:

                async def one() -> None:
                    self.churned[await churn_client(self.ws_url, rng)] += 1

                nursery.start_soon(one)
                await trio.sleep(1.0 / self.args.churn)

    async def injector(self, http: httpx.AsyncClient) -> None:
        for n in range(10**9):
            await trio.sleep(self.args.fault_every)
            spec = FAULT_PLAN[n % len(FAULT_PLAN)]
            with contextlib.suppress(httpx.HTTPError):
                await http.delete("/admin/faults")
                response = await http.post("/admin/faults", json=spec)
                if response.status_code == 200:
                    self.armed.append(response.json()["description"] + f" @ {spec['point']}")

    async def sample(self, http: httpx.AsyncClient, started: float) -> dict[str, Any]:
        metrics: dict[str, float] = Counter()
        with contextlib.suppress(httpx.HTTPError):
            text = (await http.get("/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in (
                        "sigma_actor_restarts_total",
                        "sigma_actor_hangs_total",
                        "sigma_clients_connected",
                    ):
                        metrics[sample.name] += sample.value
        rss_mb = psutil.Process(self.pid).memory_info().rss / 2**20
        row = {
            "t_s": round(trio.current_time() - started, 1),
            "rss_mb": round(rss_mb, 1),
            "restarts": int(metrics["sigma_actor_restarts_total"]),
            "hangs": int(metrics["sigma_actor_hangs_total"]),
            "clients": int(metrics["sigma_clients_connected"]),
            "churned": sum(self.churned.values()),
            "published": self.published,
            "checked": sum(ledger.received for ledger in self.ledgers),
            "lost": sum(ledger.lost for ledger in self.ledgers),
            "duplicated": sum(ledger.duplicated for ledger in self.ledgers),
            "resumes": sum(ledger.resumes for ledger in self.ledgers),
        }
        self.samples.append(row)
        return row


def print_row(row: dict[str, Any], *, header: bool = False) -> None:
    columns = list(row)
    if header:
        print("  ".join(f"{name:>10}" for name in columns), flush=True)
    print("  ".join(f"{row[name]:>10}" for name in columns), flush=True)


async def run(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="sigma-soak-"))
    port, api_key = free_port(), secrets.token_hex(8)
    config = write_config(directory, port, api_key)
    log_path = directory / "serve.log"
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sigma", "serve", "--config", str(config)],
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        with trio.fail_after(30):
            while True:  # a file, not a pipe: nothing to wait on but the file itself
                if b"Sigma running" in log_path.read_bytes():
                    break
                await trio.sleep(0.1)
        soak = Soak(
            args,
            ws_url=f"ws://127.0.0.1:{port}/ws",
            http_url=f"http://127.0.0.1:{port}",
            api_key=api_key,
            pid=process.pid,
            ledgers=[Ledger() for _ in range(args.clients)],
        )
        status = await soak_for(soak, process)
    finally:
        if process.returncode is None:
            process.kill()
    exit_code = process.returncode
    summary = summarise(soak, exit_code, log_path)
    if args.json:
        print(json.dumps({"samples": soak.samples, "summary": summary}, indent=2))
    else:
        print("\nsummary")
        for key, value in summary.items():
            print(f"  {key}: {value}")
    ok = status and exit_code == 0 and summary["lost"] == 0 and summary["duplicated"] == 0
    return 0 if ok else 1


async def soak_for(soak: Soak, process: trio.Process) -> bool:
    args = soak.args
    started = trio.current_time()
    async with (
        httpx.AsyncClient(base_url=soak.http_url, trust_env=False) as http,
        trio.open_nursery() as clients,
    ):
        for ledger in soak.ledgers:
            clients.start_soon(long_lived_client, soak.ws_url, ledger)
        async with trio.open_nursery() as load:
            load.start_soon(soak.publisher, http)
            load.start_soon(soak.churner)
            load.start_soon(soak.injector, http)
            ends_at = started + args.minutes * 60
            header = True
            while trio.current_time() < ends_at:
                await trio.sleep(min(args.report_every, ends_at - trio.current_time()))
                print_row(await soak.sample(http, started), header=header)
                header = False
                if process.returncode is not None:
                    print(f"sigma serve exited early with {process.returncode}")
                    break
            load.cancel_scope.cancel()
        if process.returncode is not None:
            clients.cancel_scope.cancel()
            return False
        await http.delete("/admin/faults")
        await soak.publish(http, 1)
        with trio.move_on_after(CATCH_UP_S) as waited:
            while True:  # the clients have nothing to signal with but their ledgers
                if all(
                    (ledger.last_seq or 0) >= soak.last_published_seq for ledger in soak.ledgers
                ):
                    break
                await trio.sleep(0.1)
        soak.samples.append({"faults": (await http.get("/admin/faults")).json()["points"]})
        print_row(await soak.sample(http, started))
        clients.cancel_scope.cancel()
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        await process.wait()
    return not waited.cancelled_caught


def summarise(soak: Soak, exit_code: int | None, log_path: Path) -> dict[str, Any]:
    rows = [row for row in soak.samples if "rss_mb" in row]
    faults = next((row["faults"] for row in soak.samples if "faults" in row), [])
    after_warmup = [row for row in rows if row["t_s"] >= WARMUP_S] or rows
    last = rows[-1] if rows else {}
    log_lines = log_path.read_bytes().splitlines()
    return {
        "minutes": soak.args.minutes,
        "rss_mb_first": rows[0]["rss_mb"] if rows else None,
        "rss_mb_first_after_warmup": after_warmup[0]["rss_mb"] if after_warmup else None,
        "rss_mb_last": last.get("rss_mb"),
        "rss_mb_max": max((row["rss_mb"] for row in rows), default=None),
        "rss_growth_after_warmup_mb": (
            round(after_warmup[-1]["rss_mb"] - after_warmup[0]["rss_mb"], 1)
            if after_warmup
            else None
        ),
        "faults_armed": len(soak.armed),
        "faults_fired": {row["point"]: row["fired"] for row in faults},
        "restarts": last.get("restarts"),
        "hangs": last.get("hangs"),
        "churned_connections": dict(soak.churned),
        "events_published_by_api": soak.published,
        "events_checked": sum(ledger.received for ledger in soak.ledgers),
        "lost": sum(ledger.lost for ledger in soak.ledgers),
        "duplicated": sum(ledger.duplicated for ledger in soak.ledgers),
        "resumes": sum(ledger.resumes for ledger in soak.ledgers),
        "unrecovered_resumes": sum(ledger.unrecovered for ledger in soak.ledgers),
        "close_codes": {
            int(code): count
            for code, count in sum(
                (ledger.closes for ledger in soak.ledgers), Counter[int]()
            ).items()
        },
        "server_exit_status": exit_code,
        "server_last_log_line": orjson.loads(log_lines[-1])["event"] if log_lines else None,
        "server_log": str(log_path),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=50, help="long-lived checked clients")
    parser.add_argument("--rate", type=float, default=50.0, help="events published a second")
    parser.add_argument("--churn", type=float, default=5.0, help="churn connections a second")
    parser.add_argument("--fault-every", type=float, default=15.0, help="seconds between faults")
    parser.add_argument("--report-every", type=float, default=15.0, help="seconds between lines")
    parser.add_argument("--json", action="store_true", help="samples and summary as JSON")
    args = parser.parse_args()
    started = time.monotonic()
    status = trio.run(run, args)
    print(f"(ran {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
