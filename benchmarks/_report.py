"""Turning the raw figures into tables and Sigma / peer ratios."""

from __future__ import annotations

from typing import Any

PEERS = ("websockets", "node", "sigma-tls")
"""What Sigma's figures are compared with; `sigma-tls` is Sigma itself over TLS (`--tls`)."""


def _find(results: dict[str, Any], server: str, scenario: str, clients: int) -> dict[str, Any]:
    for run in results["runs"]:
        if (
            run.get("server") == server
            and run.get("scenario") == scenario
            and run.get("clients") == clients
            and "error" not in run
        ):
            return run
    return {}


def _conns(results: dict[str, Any], server: str, scenario: str) -> dict[str, Any]:
    for run in results["connections"]:
        if run.get("server") == server and run.get("scenario") == scenario and "error" not in run:
            return run
    return {}


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, 3)


def stalled_cost(results: dict[str, Any], server: str) -> dict[str, Any]:
    """The stalled client's cost to one server: the others' rate loss and the memory held."""
    base = _find(results, server, "max", 100)
    stall = _find(results, server, "stalled", 100)
    if not stall:
        return {}
    base_rate, stall_rate = base.get("delivered_msgs_per_s"), stall["delivered_msgs_per_s"]
    stalled_client = stall.get("stalled_client", {})
    return {
        "baseline_msgs_per_s": base_rate,
        "stalled_msgs_per_s": stall_rate,
        "cost_pct": round((base_rate - stall_rate) / base_rate * 100, 1) if base_rate else None,
        "bytes_queued_for_stalled": stalled_client.get("bytes_waiting"),
        "rss_held_mb": (round(stall["server_rss_mb"] - base["server_rss_mb"], 1) if base else None),
        "stalled_closed_with": stalled_client.get("close_code"),
        "stalled_eof": stalled_client.get("eof"),
        "stalled_events_waiting": stalled_client.get("events_waiting"),
        "stalled_bytes_waiting": stalled_client.get("bytes_waiting"),
        "others_drops": stall.get("drops"),
    }


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Sigma / peer for each comparable figure (rate: higher is better for Sigma; cpu, p99, rss:
    lower is better), plus Sigma's own stalled-client cost and RSS per idle connection."""
    ratios: dict[str, Any] = {}
    for peer in PEERS:
        for run in results["runs"]:
            if run.get("server") != "sigma" or run.get("scenario") != "max" or "error" in run:
                continue
            clients = run["clients"]
            other = _find(results, peer, "max", clients)
            ratios[f"rate_c{clients}_vs_{peer}"] = _ratio(
                run["delivered_msgs_per_s"], other.get("delivered_msgs_per_s")
            )
        sigma_fixed = _find(results, "sigma", "fixed", 1000)
        peer_fixed = _find(results, peer, "fixed", 1000)
        for run in results["runs"]:
            if run.get("server") != "sigma" or run.get("scenario") != "max" or "error" in run:
                continue
            other = _find(results, peer, "max", run["clients"])
            ratios[f"cpu_per_msg_c{run['clients']}_vs_{peer}"] = _ratio(
                run["server_us_per_msg"], other.get("server_us_per_msg")
            )
        ratios[f"cpu_10k_c1000_vs_{peer}"] = _ratio(
            sigma_fixed.get("server_cpu_pct"), peer_fixed.get("server_cpu_pct")
        )
        ratios[f"p99_10k_c1000_vs_{peer}"] = _ratio(
            sigma_fixed.get("p99_ms"), peer_fixed.get("p99_ms")
        )
        ratios[f"rss_per_idle_conn_vs_{peer}"] = _ratio(
            _conns(results, "sigma", "idle").get("rss_per_conn_kb"),
            _conns(results, peer, "idle").get("rss_per_conn_kb"),
        )
        for clients in (10, 100, 1000):
            sigma_single = _find(results, "sigma", "single", clients)
            peer_single = _find(results, peer, "single", clients)
            ratios[f"cpu_single_10k_c{clients}_vs_{peer}"] = _ratio(
                sigma_single.get("server_cpu_pct"), peer_single.get("server_cpu_pct")
            )
            ratios[f"p99_single_10k_c{clients}_vs_{peer}"] = _ratio(
                sigma_single.get("p99_ms"), peer_single.get("p99_ms")
            )
    ratios["stalled_cost_pct"] = stalled_cost(results, "sigma").get("cost_pct")
    ratios["rss_per_idle_conn_kb"] = _conns(results, "sigma", "idle").get("rss_per_conn_kb")
    ratios["held_10k"] = _conns(results, "sigma", "ramp").get("held")
    return ratios


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([line, rule, *body])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The human-readable report: machine, delivery table, stalled, connections, ratios."""
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    out = [
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}",
        f"Versions: {versions}",
        f"Mode: {'quick' if results['settings']['quick'] else 'full'}, "
        f"elapsed {results.get('elapsed_s')} s",
    ]
    for server, why in results.get("skipped", {}).items():
        out.append(f"Skipped {server}: {why}")
    rows = []
    for run in results["runs"]:
        if "error" in run:
            rows.append([run["server"], run["scenario"], "-", f"error: {run['error'][:60]}"])
            continue
        label = run["scenario"]
        if run["mode"] == "fixed":
            kind = "single" if run.get("single") else "fixed"
            label = f"{kind} {run['offered_msgs_per_s']:,.0f}/s"
        rows.append(
            [
                run["server"],
                label,
                run["clients"],
                run["delivered_msgs_per_s"],
                run["p50_ms"],
                run["p99_ms"],
                run["max_ms"],
                run["server_cpu_pct"],
                run["server_us_per_msg"],
                run["server_rss_mb"],
                run["client_cpu_pct"],
                run["publisher_cpu_pct"],
                run["other_cpu_pct"],
                run["drops"],
                _closed(run),
            ]
        )
    headers = [
        "server",
        "scenario",
        "C",
        "delivered msg/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "srv CPU %",
        "srv us/msg",
        "srv RSS MB",
        "client CPU %",
        "pub CPU %",
        "other CPU %",
        "drops",
        "closed by server",
    ]
    rows = [r if len(r) == len(headers) else r + [""] * (len(headers) - len(r)) for r in rows]
    out += ["", "Delivery (max = flow-controlled max rate; latency = publish -> client read)"]
    out.append(_table(headers, rows))

    stall_rows = []
    for server in ("sigma", *PEERS):
        cost = stalled_cost(results, server)
        if cost:
            stall_rows.append(
                [
                    server,
                    cost["baseline_msgs_per_s"],
                    cost["stalled_msgs_per_s"],
                    cost["cost_pct"],
                    cost["rss_held_mb"],
                    cost["stalled_events_waiting"],
                    _kb(cost["bytes_queued_for_stalled"]),
                    _stall_end(cost),
                ]
            )
    if stall_rows:
        out += ["", "Stalled client (100 readers + 1 that never reads)"]
        out.append(
            _table(
                [
                    "server",
                    "others msg/s no stall",
                    "others msg/s with stall",
                    "cost %",
                    "RSS held MB",
                    "events queued for it",
                    "KB queued for it",
                    "server closed it",
                ],
                stall_rows,
            )
        )

    conn_rows = []
    for run in results["connections"]:
        if "error" in run:
            conn_rows.append([run["server"], run["scenario"], f"error: {run['error'][:60]}"])
            continue
        conn_rows.append(
            [
                run["server"],
                run["scenario"],
                run["connections"],
                run["ready"],
                run["ramp_s"],
                run.get("ramp_server_cpu_s", ""),
                run.get("ramp_cpu_us_per_conn", ""),
                run["server_rss_before_mb"],
                run["server_rss_with_mb"],
                run["rss_per_conn_kb"],
                run["idle_server_cpu_pct"],
                run["held"],
            ]
        )
    if conn_rows:
        headers = [
            "server",
            "scenario",
            "conns",
            "accepted",
            "ramp s",
            "ramp CPU s",
            "CPU µs/conn",
            "RSS before MB",
            "RSS with MB",
            "KB/conn",
            "idle CPU %",
            "all held",
        ]
        conn_rows = [r + [""] * (len(headers) - len(r)) for r in conn_rows]
        out += ["", "Connections"]
        out.append(_table(headers, conn_rows))

    overload_rows = [
        [
            run["scenario"],
            run.get("clients"),
            run.get("publishers"),
            run.get("batch"),
            run.get("queue_size"),
            run.get("accepted_events"),
            run.get("accepted_events_per_s"),
            run.get("refused_requests"),
            run.get("refused_events"),
            run.get("clients_cut"),
            run.get("kept_up"),
            run.get("lost_for_kept_up"),
            run.get("server_cpu_pct"),
            _slow_reader_cell(run.get("slow_reader")),
        ]
        for run in results.get("overload", [])
        if "error" not in run
    ]
    if overload_rows:
        out += ["", "Overload (Sigma; open loop: publishers post as fast as they are answered)"]
        headers = [
            "scenario",
            "C",
            "publishers",
            "batch",
            "queue_size",
            "accepted events",
            "accepted ev/s",
            "refused requests",
            "refused events",
            "clients cut",
            "kept up",
            "lost for kept-up",
            "srv CPU %",
            "slow reader",
        ]
        out.append(_table(headers, overload_rows))

    out += ["", "Ratios (Sigma / peer; rate > 1 and cpu, p99, rss < 1 favour Sigma)"]
    for key, value in results.get("ratios", {}).items():
        out.append(f"  {key}: {_cell(value)}")
    return "\n".join(out)


def _kb(value: Any) -> Any:
    return round(value / 1024, 1) if isinstance(value, int | float) else None


def _stall_end(cost: dict[str, Any]) -> str:
    if cost.get("stalled_closed_with") is not None:
        return f"yes ({cost['stalled_closed_with']})"
    return "yes (EOF)" if cost.get("stalled_eof") else "no"


def _closed(run: dict[str, Any]) -> str:
    codes = run.get("closed_by_server") or {}
    return ", ".join(f"{code} x{n}" for code, n in sorted(codes.items())) or "0"


def _slow_reader_cell(slow: dict[str, Any] | None) -> str:
    """What became of the overload run's slow reader: cut (with the code, after how long) or
    still open, and how many events it read."""
    if not slow:
        return "-"
    read = f"{slow.get('events_read', 0):,} read"
    if slow.get("ended_after_s") is None:
        return f"open, {read}"
    return f"closed {slow.get('close_code')} after {slow['ended_after_s']:.1f} s, {read}"
