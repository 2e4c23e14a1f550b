"""Soak test: `sigma serve` for N minutes under churn and injected faults, checked end to end.

Usage:
    python benchmarks/soak.py [--minutes 5] [--clients 50] [--rate 50] [--churn 5]
                              [--fault-every 15] [--report-every 15] [--json]

It starts `sigma serve` as a subprocess (a config of its own: free port, publish API and the
fault admin endpoint on, restart intensity loose enough for the faults below), then runs, all at
once, until the time is up:

- `--clients` long-lived `sigma.client` streams, which resume with `?since=&epoch=` after every
  close, each checked `seq` by `seq` by one `sigma.testing.DeliveryLedger`;
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
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

import sigma.client
from sigma.backoff import FullJitter
from sigma.client import GatewayClosed, GatewayProtocolError, GatewayUnavailable, Reconnect
from sigma.testing import DeliveryLedger, PublishFailed
from sigma.testing.load import publish

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
CLIENT_RECONNECT = Reconnect(backoff=FullJitter(min_s=0.05, max_s=2.0))
"""The long-lived clients' reconnects: soon, spread over up to 2 s when the server is away."""


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


async def long_lived_client(url: str, ledger: DeliveryLedger) -> None:
    """Stay connected, resuming after every close (the client library does it), checked by
    `ledger` until cancelled."""
    async with sigma.client.connect(
        url, reconnect=CLIENT_RECONNECT, connection_items=True, wait_connected=False
    ) as stream:
        await ledger.follow(stream)


async def churn_client(url: str, rng: random.Random) -> str:
    """Connect, read a few items, leave politely or by dropping the TCP connection unannounced."""
    polite = rng.random() < 0.7
    reads = rng.randrange(1, 10)
    try:
        if polite:
            async with sigma.client.connect(url, reconnect=Reconnect(enabled=False)) as stream:
                with trio.move_on_after(2.0):
                    async for _ in stream:
                        reads -= 1
                        if not reads:
                            break
            return "polite"
        parts = urlsplit(url)
        tcp = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        handshake = WSConnection(ConnectionType.CLIENT)
        await tcp.send_all(handshake.send(Request(host=parts.netloc, target=parts.path)))
        with trio.move_on_after(2.0):
            for _ in range(reads):
                if not await tcp.receive_some(65536):
                    break
        await trio.aclose_forcefully(tcp)
        return "vanished"
    except (GatewayClosed, GatewayUnavailable, GatewayProtocolError, OSError):
        return "failed"
    except trio.BrokenResourceError:
        return "failed"


@dataclass
class Soak:
    """The run's shared state and its parts."""

    args: argparse.Namespace
    ws_url: str
    http_url: str
    api_key: str
    pid: int
    ledger: DeliveryLedger
    churned: Counter[str] = field(default_factory=Counter)
    published: int = 0
    last_published_seq: int = 0
    armed: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def publish(self, http: httpx.AsyncClient, count: int) -> None:
        items = [
            {"type": "notification", "data": {"soak": self.published + n}} for n in range(count)
        ]
        seqs = await publish(http, self.api_key, items)
        self.published += count
        self.last_published_seq = seqs[-1]

    async def publisher(self, http: httpx.AsyncClient) -> None:
        per_tick = max(1, round(self.args.rate / 10))
        deadline = trio.current_time()
        while True:
            with contextlib.suppress(httpx.HTTPError, PublishFailed):
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
            "checked": self.ledger.received,
            "lost": self.ledger.lost,
            "duplicated": self.ledger.duplicated,
            "resumes": sum(c.resumes for c in self.ledger.clients.values()),
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
            ledger=DeliveryLedger(),
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
        for _ in range(args.clients):
            clients.start_soon(long_lived_client, soak.ws_url, soak.ledger)
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
        caught_up = True
        try:
            await soak.ledger.wait_caught_up(soak.last_published_seq, timeout_s=CATCH_UP_S)
        except AssertionError as behind:
            print(behind)
            caught_up = False
        soak.samples.append({"faults": (await http.get("/admin/faults")).json()["points"]})
        print_row(await soak.sample(http, started))
        clients.cancel_scope.cancel()
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        await process.wait()
    return caught_up


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
        **{f"ledger_{key}": value for key, value in soak.ledger.figures().items()},
        "lost": soak.ledger.lost,
        "duplicated": soak.ledger.duplicated,
        "delivery_problems": [line for c in soak.ledger.clients.values() for line in c.problems()][
            :20
        ],
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
