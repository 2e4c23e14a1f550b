"""Cluster benchmark: Sigma nodes sharing one Redis stream, against one memory node.

Usage:
    python benchmarks/cluster.py [--quick] [--json] [--nodes 3] [--clients 1000] [--rate 1000]

Starts a `redis-server` of its own (free port, temporary directory, no persistence), N
`sigma serve` nodes with `[broker] kind = "redis"` on it, and client workers that spread
`--clients` connections evenly over the nodes (worker i holds its connections on node
i mod N). The publisher posts to node 0 only, so every event crosses node 0 -> Redis -> every
node. The same clients and publisher then run against one node with `kind = "memory"`.
Scenarios:

- `fixed`: `--rate` events/s offered in batches every 10 ms (open loop): latency p50/p99/max
  from the publisher's stamp to each client's read. **Added p99** = cluster p99 - memory p99 at
  the same clients and rate: what the trip through Redis costs.
- `max`: batched publishes (`--batch` events per request), flow-controlled by the slowest client
  (at most `--window-batches` batches ahead): the most events/s the cluster delivers to every
  client, and the same for one memory node.

Prints one table (or, with `--json`, one JSON object); progress goes to stderr. Every process
it starts is stopped by its pid on exit, error or Ctrl-C. See BENCHMARKS.md, "Cluster".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import (
    PHASE_DRAIN,
    PHASE_MEASURE,
    PHASE_REPORT,
    LatencyStats,
    Shared,
    WorkerPlan,
    run_worker,
)
from _harness import _collect, _cpu_s, _mp, _Processes, _wait
from _publisher import PublishPlan, run_publisher
from _servers import (
    API_KEY,
    HOST,
    SIGMA_CONFIG,
    START_TIMEOUT_S,
    Server,
    _wait_listening,
    free_port,
)

BROKER_SECTION = """
[broker]
kind = "redis"
url = "redis://{host}:{redis_port}/0"
stream = "bench"
node_id = "node{index}"
"""
QUEUE_SIZE = 8192


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Redis:
    """A redis-server of the benchmark's own, stopped by its pid."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        directory = workdir / "redis"
        directory.mkdir()
        command = ["redis-server", "--port", str(self.port), "--bind", HOST, "--dir",
                   str(directory), "--save", "", "--appendonly", "no"]  # fmt: skip
        with (directory / "redis.log").open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_node(workdir: Path, index: int, redis: Redis | None) -> Server:
    """One `sigma serve` on a free port: a cluster node when `redis` is given, else memory."""
    port = free_port()
    config = workdir / f"node{index}-{port}.toml"
    text = SIGMA_CONFIG.format(port=port, queue_size=QUEUE_SIZE, api_key=API_KEY, tls="")
    if redis is not None:
        text += BROKER_SECTION.format(host=HOST, redis_port=redis.port, index=index)
    config.write_text(text)
    log_path = workdir / f"node{index}-{port}.log"
    argv = [sys.executable, "-m", "sigma", "serve", "--config", str(config)]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, start_new_session=True,
        )  # fmt: skip
    server = Server(f"node{index}", process, port, "/ws", "http", log_path)
    try:
        _wait_listening(server, START_TIMEOUT_S)
    except BaseException:
        server.stop()
        raise
    return server


def measure(
    servers: list[Server],
    *,
    clients: int,
    workers: int,
    mode: str,
    rate: float,
    batch: int,
    window_batches: int,
    warmup_s: float,
    measure_s: float,
) -> dict[str, Any]:
    """One run: clients spread over `servers`, publisher on `servers[0]`; the figures."""
    n_workers = max(len(servers), workers)
    shared = Shared(n_workers)
    result: dict[str, Any] = {"nodes": len(servers), "clients": clients, "mode": mode}
    with contextlib.ExitStack() as stack:
        procs = _Processes()
        stack.callback(procs.stop)
        stack.callback(shared.__setitem__, Shared.PHASE, PHASE_REPORT)
        pipes, worker_ps = [], []
        lifetime = 120.0 + warmup_s + measure_s + clients / 50
        for index in range(n_workers):
            share = clients // n_workers + (1 if index < clients % n_workers else 0)
            server = servers[index % len(servers)]
            plan = WorkerPlan(
                index, HOST, server.port, "/ws", share, 30.0 + clients / 200, lifetime
            )
            receive, send = _mp.Pipe(duplex=False)
            worker_ps.append(procs.start(run_worker, plan, shared, send))
            send.close()
            pipes.append(receive)
        _wait(lambda: shared.ready() >= clients, 30.0 + clients / 200, 0.05)
        result["ready"] = shared.ready()
        if mode == "max":
            plan_p = PublishPlan("http", f"http://{HOST}:{servers[0].port}", API_KEY, "max",
                                 batch, batch * window_batches)  # fmt: skip
        else:
            plan_p = PublishPlan("http", f"http://{HOST}:{servers[0].port}", API_KEY, "fixed",
                                 0, rate=rate)  # fmt: skip
        pub_receive, pub_send = _mp.Pipe(duplex=False)
        pub_procs = _Processes()
        stack.callback(pub_procs.stop)
        stack.callback(shared.__setitem__, Shared.PUB_GO, 2)
        pub_procs.start(run_publisher, plan_p, shared, pub_send)
        pub_send.close()
        shared[Shared.PUB_GO] = 1
        time.sleep(warmup_s)
        server_ps = [server.ps() for server in servers]
        cpu0 = _cpu_s(server_ps)
        total0, published0, t0 = shared.total(), shared[Shared.PUBLISHED], time.monotonic()
        shared[Shared.PHASE] = PHASE_MEASURE
        while time.monotonic() - t0 < measure_s and shared[Shared.PUB_ERRORS] == 0:
            time.sleep(0.1)
        shared[Shared.PHASE] = PHASE_DRAIN
        elapsed = time.monotonic() - t0
        total1, published1 = shared.total(), shared[Shared.PUBLISHED]
        cpu1 = _cpu_s(server_ps)
        shared[Shared.PUB_GO] = 2
        pub_report: dict[str, Any] = {}
        if pub_receive.poll(30.0):
            with contextlib.suppress(EOFError):
                pub_report = pub_receive.recv()
        published = int(pub_report.get("published", shared[Shared.PUBLISHED]))
        _wait(lambda: shared.fewest() >= published or shared.ready() == 0, 10.0, 0.02)
        shared[Shared.PHASE] = PHASE_REPORT
        reports = _collect(pipes)
    latency = LatencyStats()
    received: list[int] = []
    for report in reports:
        latency.merge(LatencyStats(report["hist"], report["max_ns"]))
        received.extend(report["received"])
    result.update(
        measure_s=round(elapsed, 2),
        published_events_per_s=round((published1 - published0) / elapsed, 1),
        delivered_msgs_per_s=round((total1 - total0) / elapsed),
        p50_ms=_round(latency.percentile_ms(50)),
        p99_ms=_round(latency.percentile_ms(99)),
        max_ms=_round(latency.max_ns / 1e6 if latency.count else None),
        servers_cpu_pct=round((cpu1 - cpu0) / elapsed * 100, 1),
        drops=sum(max(0, published - n) for n in received),
        duplicates=sum(max(0, n - published) for n in received),
        publisher_error=pub_report.get("error"),
    )
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every scenario, cluster then memory; the figures and the added p99."""
    warmup_s, measure_s = (1.0, 3.0) if args.quick else (3.0, 15.0)
    common: dict[str, Any] = {
        "clients": args.clients,
        "workers": args.workers,
        "rate": args.rate,
        "batch": args.batch,
        "window_batches": args.window_batches,
        "warmup_s": warmup_s,
        "measure_s": measure_s,
    }
    results: dict[str, Any] = {"settings": {**common, "nodes": args.nodes}, "runs": []}
    for kind in ("redis", "memory"):
        with contextlib.ExitStack() as stack:
            redis = None
            if kind == "redis":
                redis = Redis(workdir)
                stack.callback(redis.stop)
            count = args.nodes if kind == "redis" else 1
            servers = []
            for index in range(count):
                server = start_node(workdir, index, redis)
                stack.callback(server.stop)
                servers.append(server)
            for mode in args.scenarios.split(","):
                log(f"{kind}: {count} node(s), {args.clients} clients, {mode}")
                figures = measure(servers, mode=mode, **common)
                results["runs"].append({"broker": kind, **figures})
                log(f"  {figures}")
    by = {(r["broker"], r["mode"]): r for r in results["runs"]}
    fixed_cluster, fixed_memory = by.get(("redis", "fixed")), by.get(("memory", "fixed"))
    if fixed_cluster and fixed_memory and fixed_cluster["p99_ms"] and fixed_memory["p99_ms"]:
        results["added_p99_ms"] = round(fixed_cluster["p99_ms"] - fixed_memory["p99_ms"], 2)
    if ("redis", "max") in by:
        results["cluster_max_events_per_s"] = by[("redis", "max")]["published_events_per_s"]
    return results


def render(results: dict[str, Any]) -> str:
    """One table of the runs, then the two headline figures."""
    keys = ["broker", "nodes", "clients", "mode", "ready", "published_events_per_s",
            "delivered_msgs_per_s", "p50_ms", "p99_ms", "max_ms", "servers_cpu_pct", "drops",
            "duplicates"]  # fmt: skip
    lines = [" | ".join(keys)]
    for run_ in results["runs"]:
        lines.append(" | ".join(str(run_.get(key)) for key in keys))
    lines.append(f"added p99 (cluster - memory, fixed): {results.get('added_p99_ms')} ms")
    lines.append(f"cluster max events/s (batched): {results.get('cluster_max_events_per_s')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run instead of 15 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed: events/s offered")
    parser.add_argument("--batch", type=int, default=100, help="max: events per publish")
    parser.add_argument("--window-batches", type=int, default=4)
    parser.add_argument("--workers", type=int, default=max(3, os.cpu_count() or 2))
    parser.add_argument("--scenarios", default="fixed,max", help="subset of fixed,max")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="sigma-cluster-") as workdir:
        results = run(args, Path(workdir))
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
