"""One benchmark run: a server, client workers, a publisher, the measurement, the clean-up.

`fanout_run` measures delivery (max rate or a fixed offered rate, optionally with one stalled
client); `connections_run` measures holding many idle connections. Both start everything they
need and stop it again, on success, error or Ctrl-C alike (an `ExitStack` owns every process).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from _clients import (
    PHASE_DRAIN,
    PHASE_MEASURE,
    PHASE_REPORT,
    LatencyStats,
    Shared,
    WorkerPlan,
    drain_stalled,
    open_stalled,
    read_slowly,
    run_worker,
)
from _publisher import HttpPublisher, PublishPlan, WsPublisher, batch_body, run_publisher
from _servers import API_KEY, HOST, Server, ServerFactory

RSS_SAMPLE_S = 0.2
DRAIN_TIMEOUT_S = 10.0
REPORT_TIMEOUT_S = 20.0

_mp = mp.get_context("fork")


@dataclass(frozen=True)
class Settings:
    """Durations and sizes shared by every run of one benchmark invocation."""

    warmup_s: float
    measure_s: float
    fixed_measure_s: float
    workers: int
    batch: int
    """Max rate: events per publish request, the same for every server and client count."""
    window_batches: int
    """Max rate: at most this many batches beyond what the slowest client has received."""
    read_pause_s: float = 0.0
    """Max rate: clients pause this long between reads so that reads coalesce frames."""


def max_rate_batch(settings: Settings, clients: int) -> tuple[int, int]:
    """(events per batch, window in events) for the max-rate pacing at `clients` clients."""
    del clients  # the same batches whatever the fan-out: per-client costs stay comparable
    return settings.batch, settings.batch * settings.window_batches


class _Processes:
    """Child processes of one run, stopped on exit (terminate, then kill)."""

    def __init__(self) -> None:
        self.procs: list[mp.process.BaseProcess] = []

    def start(self, target: Callable[..., None], *args: Any) -> psutil.Process:
        proc = _mp.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        assert proc.pid is not None
        return psutil.Process(proc.pid)

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=3.0)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=3.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=3.0)


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _sys_s(proc: psutil.Process) -> float:
    """CPU seconds `proc` has spent in the kernel (system calls, the loopback's work)."""
    with contextlib.suppress(psutil.Error):
        return float(proc.cpu_times().system)
    return 0.0


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every CPU, any process or the kernel)."""
    times = psutil.cpu_times()
    idle = {"idle", "iowait", "guest", "guest_nice"}
    return sum(getattr(times, name) for name in times._fields if name not in idle)


def machine_irq_s() -> float:
    """CPU seconds spent in interrupts and softirqs (loopback TCP work lands largely here).

    Informational: Linux also charges most of it to the process that was running, so it overlaps
    the processes' own CPU figures.
    """
    times = psutil.cpu_times()
    return float(getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def wait_for_quiet(max_wait_s: float, busy_pct: float, log: Callable[[str], None]) -> float:
    """Wait (at most `max_wait_s`) until other processes use under `busy_pct` % of one CPU.

    Returns the last busy percentage seen. The machine is shared: other work on it competes
    with the benchmark for its cores, so runs start when it is quiet if it gets quiet in time.
    """
    deadline = time.monotonic() + max_wait_s
    warned = False
    while True:
        before, t0 = machine_busy_s(), time.monotonic()
        time.sleep(0.5)
        busy = (machine_busy_s() - before) / (time.monotonic() - t0) * 100
        if busy < busy_pct or time.monotonic() >= deadline:
            return busy
        if not warned:
            log(f"  machine busy with other work ({busy:.0f}% CPU); waiting <= {max_wait_s:.0f} s")
            warned = True


def _rss(proc: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return int(proc.memory_info().rss)
    return 0


def _wait(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def _start_workers(
    stack: contextlib.ExitStack,
    server: Server,
    clients: int,
    n_workers: int,
    connect_timeout_s: float,
    lifetime_s: float,
    read_pause_s: float = 0.0,
) -> tuple[Shared, list[Any], list[psutil.Process]]:
    shared = Shared(n_workers)
    procs = _Processes()
    stack.callback(procs.stop)
    pipes = []
    handles = []
    for index in range(n_workers):
        share = clients // n_workers + (1 if index < clients % n_workers else 0)
        plan = WorkerPlan(
            index,
            HOST,
            server.port,
            server.ws_path,
            share,
            connect_timeout_s,
            lifetime_s,
            read_pause_s,
            server.ca_file,
        )
        receive, send = _mp.Pipe(duplex=False)
        handles.append(procs.start(run_worker, plan, shared, send))
        send.close()
        pipes.append(receive)
    # Report phase on exit whatever happens, so workers end quickly.
    stack.callback(shared.__setitem__, Shared.PHASE, PHASE_REPORT)
    return shared, pipes, handles


def _collect(pipes: list[Any]) -> list[dict[str, Any]]:
    reports = []
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    for pipe in pipes:
        left = max(0.1, deadline - time.monotonic())
        if pipe.poll(left):
            with contextlib.suppress(EOFError):
                reports.append(pipe.recv())
    return reports


def fanout_run(
    factory: ServerFactory,
    settings: Settings,
    server_name: str,
    *,
    clients: int,
    mode: str,
    rate_msgs: float = 0.0,
    stalled: bool = False,
    single: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure delivery from one server to `clients` clients; returns the figures of the run.

    `mode` is `max` (flow-controlled, nothing dropped) or `fixed` (`rate_msgs` deliveries per
    second, i.e. `rate_msgs / clients` events per second); `single` (fixed only): one event per
    request (Sigma) or per frame (peers) instead of batches per 10 ms tick.
    """
    measure_s = settings.measure_s if mode == "max" else settings.fixed_measure_s
    n_workers = max(1, min(settings.workers, clients))
    result: dict[str, Any] = {
        "server": server_name,
        "scenario": ("stalled" if stalled else "single" if single else mode),
        "mode": mode,
        "single": single,
        "clients": clients,
        "workers": n_workers,
    }
    with contextlib.ExitStack() as stack:
        server = factory.start(server_name)
        stack.callback(server.stop)
        server_ps = server.ps()
        lifetime = 120.0 + settings.warmup_s + measure_s + clients / 50
        connect_timeout = 30.0 + clients / 200
        pause = settings.read_pause_s if mode == "max" else 0.0
        shared, pipes, worker_ps = _start_workers(
            stack, server, clients, n_workers, connect_timeout, lifetime, pause
        )
        started = time.monotonic()
        _wait(lambda: shared.ready() >= clients, connect_timeout, 0.05)
        result["connect_s"] = round(time.monotonic() - started, 2)
        result["ready"] = shared.ready()
        if result["ready"] < clients:
            log(f"  only {result['ready']}/{clients} clients connected")

        if mode == "max":
            batch, window = max_rate_batch(settings, clients)
            plan = PublishPlan(
                server.publish_kind,
                server.publish_url,
                API_KEY,
                "max",
                batch,
                window,
                ca_file=server.ca_file,
            )
            result.update(batch=batch, window=window)
        else:
            events_per_s = rate_msgs / clients
            plan = PublishPlan(
                server.publish_kind,
                server.publish_url,
                API_KEY,
                "fixed",
                0,
                rate=events_per_s,
                single=single,
                ca_file=server.ca_file,
            )
            result.update(offered_msgs_per_s=rate_msgs, offered_events_per_s=events_per_s)
        pub_receive, pub_send = _mp.Pipe(duplex=False)
        pub_procs = _Processes()
        stack.callback(pub_procs.stop)
        stack.callback(shared.__setitem__, Shared.PUB_GO, 2)
        publisher_ps = pub_procs.start(run_publisher, plan, shared, pub_send)
        pub_send.close()

        stall_sock = None
        if stalled:
            stall_sock = open_stalled(HOST, server.port, server.ws_path, ca_file=server.ca_file)
            stack.callback(stall_sock.close)

        rss_before = _rss(server_ps)
        shared[Shared.PUB_GO] = 1
        time.sleep(settings.warmup_s)

        cpu0 = (
            _cpu_s([server_ps]),
            _cpu_s(worker_ps),
            _cpu_s([publisher_ps]),
            machine_busy_s(),
            machine_irq_s(),
        )
        total0, published0, t0 = shared.total(), shared[Shared.PUBLISHED], time.monotonic()
        shared[Shared.PHASE] = PHASE_MEASURE
        rss_peak = 0
        while time.monotonic() - t0 < measure_s and shared[Shared.PUB_ERRORS] == 0:
            rss_peak = max(rss_peak, _rss(server_ps))
            time.sleep(RSS_SAMPLE_S)
        shared[Shared.PHASE] = PHASE_DRAIN
        t1 = time.monotonic()
        total1, published1 = shared.total(), shared[Shared.PUBLISHED]
        cpu1 = (
            _cpu_s([server_ps]),
            _cpu_s(worker_ps),
            _cpu_s([publisher_ps]),
            machine_busy_s(),
            machine_irq_s(),
        )
        rss_end = _rss(server_ps)
        elapsed = t1 - t0

        shared[Shared.PUB_GO] = 2
        pub_report: dict[str, Any] = {}
        if pub_receive.poll(30.0):
            with contextlib.suppress(EOFError):
                pub_report = pub_receive.recv()
        published = int(pub_report.get("published", shared[Shared.PUBLISHED]))
        # Let every open client catch up with what was published (bounded).
        _wait(lambda: shared.fewest() >= published or shared.ready() == 0, DRAIN_TIMEOUT_S, 0.02)
        if stall_sock is not None:
            result["stalled_client"] = drain_stalled(stall_sock, timeout_s=10.0)
        shared[Shared.PHASE] = PHASE_REPORT
        reports = _collect(pipes)

    latency = LatencyStats()
    received: list[int] = []
    close_codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for report in reports:
        latency.merge(LatencyStats(report["hist"], report["max_ns"]))
        received.extend(report["received"])
        for key, value in report["close_codes"].items():
            close_codes[key] = close_codes.get(key, 0) + value
        for key, value in report["errors"].items():
            errors[key] = errors.get(key, 0) + value
    drops = sum(max(0, published - n) for n in received)
    extra = sum(max(0, n - published) for n in received)
    result.update(
        measure_s=round(elapsed, 2),
        delivered_msgs_per_s=round((total1 - total0) / elapsed),
        published_events_per_s=round((published1 - published0) / elapsed, 1),
        published_events=published,
        latency_samples=latency.count,
        p50_ms=_round(latency.percentile_ms(50)),
        p99_ms=_round(latency.percentile_ms(99)),
        max_ms=_round(latency.max_ns / 1e6 if latency.count else None),
        server_cpu_pct=round((cpu1[0] - cpu0[0]) / elapsed * 100, 1),
        server_us_per_msg=(
            round((cpu1[0] - cpu0[0]) / (total1 - total0) * 1e6, 2) if total1 > total0 else None
        ),
        client_cpu_pct=round((cpu1[1] - cpu0[1]) / elapsed * 100, 1),
        publisher_cpu_pct=round((cpu1[2] - cpu0[2]) / elapsed * 100, 1),
        machine_busy_pct=round((cpu1[3] - cpu0[3]) / elapsed * 100, 1),
        kernel_irq_pct=round((cpu1[4] - cpu0[4]) / elapsed * 100, 1),
        other_cpu_pct=round(
            ((cpu1[3] - cpu0[3]) - sum(cpu1[i] - cpu0[i] for i in (0, 1, 2))) / elapsed * 100, 1
        ),
        server_rss_mb=round(rss_end / 2**20, 1),
        server_rss_peak_mb=round(max(rss_peak, rss_end) / 2**20, 1),
        server_rss_before_mb=round(rss_before / 2**20, 1),
        drops=drops,
        duplicates=extra,
        closed_by_server=close_codes,
        client_errors=errors,
        publisher=pub_report,
    )
    return result


def cpu_hog(lifetime_s: float) -> None:
    """Process entry point: burn one core (a busy loop) until killed or `lifetime_s` passes."""
    deadline = time.monotonic() + lifetime_s
    n = 0
    while n % 100_000 or time.monotonic() < deadline:
        n += 1


def overload_run(
    factory: ServerFactory,
    settings: Settings,
    server_name: str,
    *,
    clients: int = 100,
    publishers: int = 4,
    batch: int = 100,
    queue_size: int = 256,
    hog: bool = False,
    slow_reader_bytes_s: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Open-loop overload of Sigma: `publishers` post `batch`-event requests as fast as they
    are answered, not paced by the clients at all, to `clients` readers, with the default
    `[hub] queue_size`; with `hog`, a busy loop burns a core beside them; with
    `slow_reader_bytes_s`, one more client reads steadily at that many bytes per second (a
    reader slower than what is published: the server should cut it rather than let it pace the
    publishers), reported as `slow_reader`.

    Figures: events accepted (2xx) and refused (503), clients cut off by the server (and with
    which close codes), and events lost for the clients that kept their connection (accepted
    minus received, after a bounded drain): the last two should be 0.
    """
    measure_s = settings.fixed_measure_s
    n_workers = max(1, min(settings.workers, clients))
    result: dict[str, Any] = {
        "server": server_name,
        "scenario": "overload" + ("+hog" if hog else "") + ("+slow" if slow_reader_bytes_s else ""),
        "clients": clients,
        "publishers": publishers,
        "batch": batch,
        "queue_size": queue_size,
        "hog": hog,
    }
    saved_queue_size = factory.sigma_queue_size
    factory.sigma_queue_size = queue_size
    try:
        server = factory.start(server_name)
    finally:
        factory.sigma_queue_size = saved_queue_size
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server_ps = server.ps()
        lifetime = 120.0 + settings.warmup_s + measure_s + clients / 50
        connect_timeout = 30.0 + clients / 200
        shared, pipes, _worker_ps = _start_workers(
            stack, server, clients, n_workers, connect_timeout, lifetime
        )
        _wait(lambda: shared.ready() >= clients, connect_timeout, 0.05)
        result["ready"] = shared.ready()
        slow_reader: dict[str, Any] = {}
        if slow_reader_bytes_s:
            slow_sock = open_stalled(HOST, server.port, server.ws_path, ca_file=server.ca_file)
            stack.callback(slow_sock.close)
            stop_slow = threading.Event()
            slow_thread = threading.Thread(
                target=lambda: slow_reader.update(
                    read_slowly(slow_sock, slow_reader_bytes_s, stop_slow)
                ),
                daemon=True,
            )
            slow_thread.start()
            stack.callback(slow_thread.join, 5.0)
            stack.callback(stop_slow.set)
        if hog:
            hog_proc = _mp.Process(target=cpu_hog, args=(lifetime,), daemon=True)
            hog_proc.start()
            stack.callback(hog_proc.join, 3.0)
            stack.callback(hog_proc.kill)
        pub_procs = _Processes()
        stack.callback(pub_procs.stop)
        stack.callback(shared.__setitem__, Shared.PUB_GO, 2)
        pub_pipes = []
        pub_ps = []
        for _ in range(publishers):
            plan = PublishPlan(
                server.publish_kind,
                server.publish_url,
                API_KEY,
                "flood",
                batch,
                ca_file=server.ca_file,
            )
            receive, send = _mp.Pipe(duplex=False)
            pub_ps.append(pub_procs.start(run_publisher, plan, shared, send))
            send.close()
            pub_pipes.append(receive)
        cpu0 = _cpu_s([server_ps])
        t0 = time.monotonic()
        shared[Shared.PUB_GO] = 1
        shared[Shared.PHASE] = PHASE_MEASURE
        time.sleep(measure_s)
        shared[Shared.PUB_GO] = 2
        reports = []
        for pipe in pub_pipes:
            if pipe.poll(30.0):
                with contextlib.suppress(EOFError):
                    reports.append(pipe.recv())
        elapsed = time.monotonic() - t0
        cpu1 = _cpu_s([server_ps])
        accepted = sum(int(r.get("published", 0)) for r in reports)
        # Every accepted event must reach every client still connected (bounded wait).
        _wait(lambda: shared.fewest() >= accepted or shared.ready() == 0, 60.0, 0.05)
        shared[Shared.PHASE] = PHASE_REPORT
        worker_reports = _collect(pipes)
    if slow_reader_bytes_s:
        result["slow_reader"] = {"bytes_per_s": slow_reader_bytes_s, **slow_reader}
    received_open = [n for r in worker_reports for n in r.get("received_open", [])]
    close_codes: dict[str, int] = {}
    for report in worker_reports:
        for key, value in report["close_codes"].items():
            close_codes[key] = close_codes.get(key, 0) + value
    result.update(
        measure_s=round(elapsed, 2),
        accepted_events=accepted,
        accepted_events_per_s=round(accepted / elapsed),
        refused_requests=sum(int(r.get("refused", 0)) for r in reports),
        refused_events=sum(int(r.get("refused_events", 0)) for r in reports),
        other_statuses=[r.get("other_statuses", {}) for r in reports],
        publisher_errors=[r["error"] for r in reports if r.get("error")],
        clients_cut=sum(close_codes.values()),
        close_codes=close_codes,
        kept_up=len(received_open),
        lost_for_kept_up=sum(max(0, accepted - n) for n in received_open),
        server_cpu_pct=round((cpu1 - cpu0) / elapsed * 100, 1),
    )
    return result


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def connections_run(
    factory: ServerFactory,
    settings: Settings,
    server_name: str,
    *,
    connections: int,
    hold_s: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Open `connections` idle connections; report RSS per connection and whether all were held.

    "Held" means: every connection got its welcome, none was closed during `hold_s`, and every
    one of them received one event published afterwards.
    """
    n_workers = max(1, min(settings.workers, connections))
    result: dict[str, Any] = {"server": server_name, "connections": connections}
    with contextlib.ExitStack() as stack:
        server = factory.start(server_name)
        stack.callback(server.stop)
        server_ps = server.ps()
        time.sleep(1.0)
        rss_before = _rss(server_ps)
        connect_timeout = 60.0 + connections / 100
        shared, pipes, _workers = _start_workers(
            stack, server, connections, n_workers, connect_timeout, connect_timeout + 120.0
        )
        started, ramp_cpu0, ramp_sys0 = time.monotonic(), _cpu_s([server_ps]), _sys_s(server_ps)
        _wait(lambda: shared.ready() + shared.closed() >= connections, connect_timeout, 0.05)
        result["ramp_s"] = round(time.monotonic() - started, 2)
        result["ready"] = shared.ready()
        # CPU seconds the server spent accepting: robust where wall time is not (a busy machine).
        ramp_cpu_s = _cpu_s([server_ps]) - ramp_cpu0
        result["ramp_server_cpu_s"] = round(ramp_cpu_s, 2)
        result["ramp_cpu_us_per_conn"] = round(ramp_cpu_s / max(1, result["ready"]) * 1e6, 1)
        result["ramp_server_sys_s"] = round(_sys_s(server_ps) - ramp_sys0, 2)  # in the kernel
        cpu0, t0 = _cpu_s([server_ps]), time.monotonic()
        time.sleep(hold_s)
        result["idle_server_cpu_pct"] = round(
            (_cpu_s([server_ps]) - cpu0) / (time.monotonic() - t0) * 100, 1
        )
        rss_with = _rss(server_ps)
        result["open_after_hold"] = shared.ready()
        publisher = (
            HttpPublisher(server.publish_url, API_KEY, server.ca_file)
            if server.publish_kind == "http"
            else WsPublisher(server.publish_url)
        )
        stack.callback(publisher.close)
        publisher.send(batch_body(0, 1, time.time_ns()))
        _wait(lambda: shared.total() >= result["open_after_hold"], 30.0, 0.05)
        result["got_probe_event"] = shared.total()
        shared[Shared.PHASE] = PHASE_REPORT
        reports = _collect(pipes)
    errors: dict[str, int] = {}
    for report in reports:
        for key, value in report["errors"].items():
            errors[key] = errors.get(key, 0) + value
    result.update(
        server_rss_before_mb=round(rss_before / 2**20, 1),
        server_rss_with_mb=round(rss_with / 2**20, 1),
        rss_per_conn_kb=round((rss_with - rss_before) / max(1, result["ready"]) / 1024, 1),
        held=(
            result["ready"] == connections
            and result["open_after_hold"] == connections
            and result["got_probe_event"] == connections
        ),
        client_errors=errors,
    )
    if errors:
        log(f"  client errors: {errors}")
    return result
