"""Side-by-side fan-out benchmark: Sigma against Python `websockets` and node `ws`.

Usage:
    python benchmarks/fanout.py [--quick] [--json] [--servers sigma,websockets,node] [--tls]

Every server runs in its own process on 127.0.0.1 (a free port) and gets the same clients (worker
processes, each holding many connections and reading raw frames) and the same ~200-byte JSON
events, published in batches by a separate publisher process. Scenarios:

- `max` at C = 10, 100, 1000: the fastest rate every client keeps up with (flow-controlled by
  the slowest client, so nothing is dropped).
- `fixed` at C = 1000: a fixed offered load of 10,000 deliveries/s (10 events/s to 1000 clients):
  server CPU and latency at a load every server can carry.
- `single` at C = 10, 100, 1000: the same fixed 10,000 deliveries/s, one event per request for
  Sigma (one per frame for the peers): the common case of a backend publishing as events happen.
- `overload` (Sigma only): open loop, four publishers posting 100-event batches as fast as they
  are answered to 100 clients with the default queue size, without and with a CPU hog beside
  the server: accepted and refused publishes, clients cut, events lost for clients that kept up.
  A third run adds one client that reads steadily at 200 KB/s (`SLOW_READER_BYTES_S`), slower
  than what is published: whether, and when, the server cuts it (4008) instead of letting it
  pace the publishers, and what the publishers got through beside it.
- `stalled`: 100 clients plus one that connects and never reads: the others' rate against the
  C = 100 `max` run, and what the server holds for the stalled one.
- `idle`: 5,000 idle connections: server RSS per connection.
- `ramp`: 10,000 connections: whether all are accepted and held.

With `--tls`, Sigma also runs as `sigma-tls`: the same server with a `trustme` certificate, its
clients and publisher speaking `wss://` and `https://` and trusting that CA, right after plain
`sigma` in every round; the ratios `..._vs_sigma-tls` are then plain Sigma over Sigma on TLS.

`--servers ...,fanout-floor` adds `_peers/fanout_floor_server.py`: trio, h11 and wsproto taking
Sigma's publishes and writing each event to every subscriber, and nothing else. It is what any
server built on Sigma's protocol libraries pays for the same load before its own work.

Prints one table per scenario kind and the Sigma / peer ratios; with `--json`, one JSON object
instead (progress goes to stderr either way). See BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Settings, connections_run, fanout_run, overload_run, wait_for_quiet
from _report import compute_ratios, render
from _servers import ServerFactory

ALL_SERVERS = ("sigma", "websockets", "node")
KNOWN_SERVERS = (*ALL_SERVERS, "sigma-tls", "fanout-floor")
FD_LIMIT_WANTED = 65536
RATE = "delivered_msgs_per_s"
QUIET_BELOW_PCT = 20.0
SLOW_READER_BYTES_S = 200_000
"""The `overload` scenario's slow reader: about a tenth of what the others read there."""
"""Other processes' CPU (% of one core) under which the machine counts as quiet."""


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    """Raise this process's open-file limit (inherited by servers and workers); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_WANTED)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "?"
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (under ~10 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON object to FILE")
    parser.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help="comma-separated subset of sigma,websockets,node,sigma-tls,fanout-floor "
        "(default: the first three)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also run Sigma over TLS (sigma-tls: wss:// and https://, a trustme certificate)",
    )
    parser.add_argument(
        "--scenarios",
        default="max,fixed,single,overload,stalled,idle,ramp",
        help="comma-separated subset of max,fixed,single,overload,stalled,idle,ramp (default: all)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help="client worker processes (each holds C / workers connections)",
    )
    parser.add_argument("--fixed-rate", type=float, default=10_000.0, help="deliveries/s")
    parser.add_argument(
        "--sigma-queue-size",
        type=int,
        default=4096,
        help="Sigma's [hub] queue_size; must exceed batch x window-batches",
    )
    parser.add_argument(
        "--sigma-ref",
        default="",
        help="benchmark sigma/ as committed at this git ref (default: the working tree)",
    )
    parser.add_argument("--clients", default="10,100,1000", help="client counts for `max`")
    parser.add_argument("--batch", type=int, default=100, help="events per publish request")
    parser.add_argument(
        "--window-batches",
        type=int,
        default=4,
        help="max rate: batches the publisher may run ahead of the slowest client",
    )
    parser.add_argument(
        "--repeat", type=int, default=0, help="runs per delivery scenario (default 1 quick, 3 full)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=-1.0,
        help="before each run, wait up to this many seconds for other load to settle "
        "(default 20 quick, 60 full)",
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=30.0,
        help="rerun a delivery run if other processes used more than this %% of one CPU",
    )
    parser.add_argument(
        "--retries", type=int, default=-1, help="reruns allowed per run (default 1 quick, 2 full)"
    )
    parser.add_argument(
        "--read-pause-ms",
        type=float,
        default=1.0,
        help="max rate: clients sleep this long between passes so reads coalesce frames",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios against the selected servers and print the results."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    quick = args.quick
    if args.repeat <= 0:
        args.repeat = 1 if quick else 3
    if args.retries < 0:
        args.retries = 1 if quick else 2
    if args.wait_quiet < 0:
        args.wait_quiet = 20.0 if quick else 60.0
    settings = Settings(
        warmup_s=1.0 if quick else 3.0,
        measure_s=3.0 if quick else 10.0,
        fixed_measure_s=5.0 if quick else 15.0,
        workers=args.workers,
        batch=args.batch,
        window_batches=args.window_batches,
        read_pause_s=args.read_pause_ms / 1000,
    )
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(KNOWN_SERVERS))
    if unknown:
        raise SystemExit(f"fanout.py: unknown server(s) {', '.join(unknown)}")
    if args.tls and "sigma-tls" not in servers:
        at = servers.index("sigma") + 1 if "sigma" in servers else 0
        servers.insert(at, "sigma-tls")
    fd_limit = raise_fd_limit()
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            **settings.__dict__,
            "quick": quick,
            "fd_limit": fd_limit,
            "sigma_queue_size": args.sigma_queue_size,
            "fixed_rate_msgs_per_s": args.fixed_rate,
        },
        "runs": [],
        "connections": [],
        "overload": [],
        "skipped": {},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sigma-bench-") as workdir:
        factory = ServerFactory(Path(workdir), args.sigma_queue_size, args.sigma_ref)
        if "node" in servers:
            problem = factory.node_available(log)
            if problem:
                log(f"skipping node ws: {problem}")
                results["skipped"]["node"] = problem
                servers.remove("node")
        results["versions"] = factory.versions()
        try:
            run_scenarios(factory, settings, servers, build_scenarios(args), args, results)
        except KeyboardInterrupt:
            log("interrupted: everything started has been stopped")
            results["interrupted"] = True
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["ratios"] = compute_ratios(results)
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=False))
    else:
        print(render(results))
    return 130 if results.get("interrupted") else 0


@dataclass(frozen=True)
class Scenario:
    """One measurement to make against every server."""

    label: str
    run: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any]
    key: str
    """The figure whose median run stands for the scenario (repeats)."""
    table: str
    """`runs` (delivery), `connections` or `overload`."""
    name: str = ""
    only: str = ""
    """Run against this server only (the others have no way to refuse a publish)."""


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The selected scenarios, in the order they run."""
    wanted = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    out: list[Scenario] = []
    if "max" in wanted:
        for clients in (int(n) for n in args.clients.split(",") if n.strip()):
            kwargs = {"clients": clients, "mode": "max"}
            out.append(Scenario(f"max C={clients}", fanout_run, kwargs, RATE, "runs"))
    if "fixed" in wanted:
        kwargs = {"clients": 1000, "mode": "fixed", "rate_msgs": args.fixed_rate}
        label = f"fixed C=1000 {args.fixed_rate:.0f} msg/s"
        out.append(Scenario(label, fanout_run, kwargs, "server_cpu_pct", "runs"))
    if "single" in wanted:
        for clients in (int(n) for n in args.clients.split(",") if n.strip()):
            kwargs = {
                "clients": clients,
                "mode": "fixed",
                "rate_msgs": args.fixed_rate,
                "single": True,
            }
            label = f"single C={clients} {args.fixed_rate:.0f} msg/s"
            out.append(Scenario(label, fanout_run, kwargs, "server_cpu_pct", "runs"))
    if "overload" in wanted:
        variants = [(False, 0), (True, 0), (False, SLOW_READER_BYTES_S)]
        for hog, slow in variants:
            label = (
                "overload C=100"
                + (" + CPU hog" if hog else "")
                + (" + slow reader" if slow else "")
            )
            kwargs = {"hog": hog, "slow_reader_bytes_s": slow}
            out.append(
                Scenario(label, overload_run, kwargs, "accepted_events", "overload", only="sigma")
            )
    if "stalled" in wanted:
        kwargs = {"clients": 100, "mode": "max", "stalled": True}
        out.append(Scenario("stalled C=100+1", fanout_run, kwargs, RATE, "runs"))
    if "idle" in wanted:
        kwargs = {"connections": 5000, "hold_s": 3.0}
        out.append(
            Scenario("idle 5000", connections_run, kwargs, "rss_per_conn_kb", "connections", "idle")
        )
    if "ramp" in wanted:
        kwargs = {"connections": 10_000, "hold_s": 3.0}
        out.append(Scenario("ramp 10000", connections_run, kwargs, "ramp_s", "connections", "ramp"))
    return out


def run_scenarios(
    factory: ServerFactory,
    settings: Settings,
    servers: list[str],
    scenarios: list[Scenario],
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Run every scenario against every server, servers interleaved within each repeat.

    Interleaving spreads whatever else the machine is doing over all servers alike. A delivery
    run during which other processes used more than `--max-other-cpu` % is run again (up to
    `--retries` times) and the least disturbed attempt is kept; of the repeats, the median run by
    the scenario's key figure stands for it.
    """
    for scenario in scenarios:
        names = [n for n in servers if not scenario.only or n == scenario.only]
        tries: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        repeat = args.repeat if scenario.table == "runs" else 1
        for round_no in range(repeat):
            for name in names:
                suffix = f" (repeat {round_no + 1}/{repeat})" if repeat > 1 else ""
                tries[name].append(
                    _least_disturbed(factory, settings, name, scenario, suffix, args)
                )
        for name in names:
            chosen = _median(tries[name], scenario.key)
            if scenario.name:
                chosen = {**chosen, "scenario": scenario.name}
            results[scenario.table].append(chosen)


def _least_disturbed(
    factory: ServerFactory,
    settings: Settings,
    name: str,
    scenario: Scenario,
    suffix: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = []
    for attempt_no in range(1 + max(0, args.retries)):
        busy = wait_for_quiet(args.wait_quiet, QUIET_BELOW_PCT, log)
        log(f"{name}: {scenario.label}{suffix} ...")
        try:
            figures = scenario.run(factory, settings, name, log=log, **scenario.kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            log(f"{name}: {scenario.label} failed: {type(exc).__name__}: {exc}")
            figures = {"server": name, "scenario": scenario.label, "error": f"{exc!r}"}
        figures["busy_before_pct"] = round(busy, 1)
        log(f"{name}: {scenario.label}: {_summary(figures)}")
        attempts.append(figures)
        other = figures.get("other_cpu_pct")
        if other is None or other <= args.max_other_cpu:
            break
        if attempt_no < args.retries:
            log(f"  other processes used {other:.0f}% CPU during the run: running it again")
    good = [a for a in attempts if "error" not in a]
    if not good:
        return attempts[-1]
    chosen = min(good, key=lambda a: a.get("other_cpu_pct") or 0.0)
    return {**chosen, "attempts": len(attempts)}


def _median(tries: list[dict[str, Any]], key: str) -> dict[str, Any]:
    good = [t for t in tries if "error" not in t]
    if not good:
        return tries[-1]
    chosen = sorted(good, key=lambda t: t.get(key) or 0)[len(good) // 2]
    if len(tries) > 1:
        chosen = {**chosen, "repeats": [t.get(key) for t in tries]}
    return chosen


def _summary(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return "error"
    keys = (
        "delivered_msgs_per_s",
        "p50_ms",
        "p99_ms",
        "server_cpu_pct",
        "client_cpu_pct",
        "drops",
        "rss_per_conn_kb",
        "held",
        "ramp_s",
        "accepted_events",
        "refused_events",
        "clients_cut",
        "lost_for_kept_up",
        "ramp_cpu_us_per_conn",
        "ramp_server_sys_s",
    )
    return ", ".join(f"{k}={figures[k]}" for k in keys if k in figures)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
