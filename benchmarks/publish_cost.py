"""Server CPU per `POST /api/publish` request on one keep-alive connection.

Starts `sigma serve` (the fan-out benchmark's config: publish API on, no engine, nothing polled,
logs at `warning`), optionally with C idle WebSocket subscribers, then sends requests from one
bare blocking socket: each request is pre-built bytes, and the answer is read up to the end of
its body (Content-Length), so the publisher costs next to nothing. The server's CPU time
(user + system, psutil) is read before and after the measured requests, so the figure holds on a
busy machine better than a rate does. It is a script, not part of the test suite.

    python benchmarks/publish_cost.py                       # single-event requests, 5,000 of them
    python benchmarks/publish_cost.py --batch 100 -n 500    # 100-event batches: per event too
    python benchmarks/publish_cost.py --clients 10          # with 10 subscribers reading
    python benchmarks/publish_cost.py --profile out.txt     # py-spy samples (collapsed stacks)
    python benchmarks/publish_cost.py --instructions -n 2000   # instructions, under valgrind
    python benchmarks/publish_cost.py --servers sigma,h11-floor   # beside trio + h11 alone

`--servers sigma,h11-floor` measures, within each repeat and one after the other, Sigma and a
server that runs trio and h11 and nothing else (`_peers/h11_floor_server.py`): the floor under
any publish path built on them, measured on the same machine at the same moment. With
`--instructions` it counts both, one after the other.

`--instructions` counts the server's instructions per request instead (valgrind's cachegrind,
no cache simulation): the server runs twice, once with the warm-up only and once with the
warm-up and the measured requests, and the difference of the two totals is divided by the
number of requests. Unlike CPU time, the count does not depend on what else runs on the
machine (it varies by about 1 % between runs, from start-up), so it is the figure to compare
two commits by on a shared machine; it does not see time spent in the kernel.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _servers import API_KEY, HOST, Server, ServerFactory

PAD = "x" * 56


def request_bytes(port: int, batch: int, n: int) -> bytes:
    """One keep-alive `POST /api/publish` with `batch` events (one object when batch is 1)."""
    item = f'{{"type":"notification","data":{{"bn":{n},"pad":"{PAD}","bt":{time.time_ns()}}}}}'
    body = item if batch == 1 else "[" + ",".join([item] * batch) + "]"
    head = (
        f"POST /api/publish HTTP/1.1\r\nhost: {HOST}:{port}\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


def read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response (head and Content-Length body) off `sock`; return its status."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            total = end + 4 + length
            while len(buffer) < total:
                buffer += sock.recv(65536)
            status = int(head[9:12])
            del buffer[:total]
            return status
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffer += chunk


def run_requests(port: int, batch: int, count: int) -> None:
    """Send `count` requests one after another on one connection, each answered 200."""
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        for n in range(count):
            sock.sendall(request_bytes(port, batch, n))
            status = read_response(sock, buffer)
            if status != 200:
                raise RuntimeError(f"publish answered {status}")


def hold_subscribers(port: int, count: int, stop: threading.Event) -> threading.Thread:
    """Open `count` WebSocket subscribers (trio-websocket) that read until `stop`."""
    ready = threading.Barrier(2)

    def main() -> None:
        import trio
        from trio_websocket import ConnectionClosed, open_websocket_url

        async def one(url: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_websocket_url(url) as ws:
                await ws.get_message()  # the welcome
                task_status.started()
                try:
                    while not stop.is_set():
                        with trio.move_on_after(0.2):
                            await ws.get_message()
                except ConnectionClosed:
                    pass  # the server stopped first: the measured requests are done

        async def all_of_them() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    await nursery.start(one, f"ws://{HOST}:{port}/ws")
                ready.wait()

        trio.run(all_of_them)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait()
    return thread


def start_py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """Sample `pid` with py-spy (`pip install py-spy`) into `out` until SIGINT."""
    spy_path = Path(sys.executable).with_name("py-spy")
    fmt = "speedscope" if out.endswith(".json") else "raw"
    spy = subprocess.Popen(
        [str(spy_path), "record", "--pid", str(pid), "--rate", "500", "-f", fmt, "-o", out]
    )
    time.sleep(1.0)  # let it attach
    return spy


def count_instructions(name: str, args: argparse.Namespace, tmp: Path) -> None:
    """Print server `name`'s instructions per request, counted by cachegrind (see the
    docstring)."""
    totals = []
    for measured in (0, args.requests):
        workdir = tmp / f"{name}-{measured}"
        workdir.mkdir()
        out = workdir / "cachegrind.out"
        launcher = (
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
        )
        factory = ServerFactory(
            workdir,
            sigma_queue_size=max(4096, (args.warmup + args.requests) * args.batch),
            sigma_ref=args.sigma_ref,
            launcher=launcher,
        )
        server = factory.start(name)
        stop = threading.Event()
        try:
            if args.clients:
                hold_subscribers(server.port, args.clients, stop)
            run_requests(server.port, args.batch, args.warmup)
            if measured:
                run_requests(server.port, args.batch, measured)
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(300)  # valgrind writes its count as the process exits
        finally:
            stop.set()
            server.stop()
        found = re.findall(r"I\s+refs:\s+([\d,]+)", server.log_path.read_text(errors="replace"))
        if not found:
            raise RuntimeError(f"no instruction count in the server's output:\n{server.log_tail()}")
        totals.append(int(found[-1].replace(",", "")))
    per_request = (totals[1] - totals[0]) / args.requests
    label = f"sigma {factory.versions()['sigma_commit']}" if name == "sigma" else name
    print(
        f"{label}: batch={args.batch} "
        f"clients={args.clients} requests={args.requests} (after {args.warmup} warm-up)"
    )
    print(f"server instructions per request: {per_request:,.0f}")
    if args.batch > 1:
        print(f"server instructions per event:   {per_request / args.batch:,.0f}")


def measure(server: Server, args: argparse.Namespace) -> tuple[float, float, float]:
    """One measured run against `server`: its CPU seconds, the wall seconds, its user seconds."""
    process = server.ps()
    before = process.cpu_times()
    started = time.perf_counter()
    run_requests(server.port, args.batch, args.requests)
    wall = time.perf_counter() - started
    after = process.cpu_times()
    user = after.user - before.user
    return user + (after.system - before.system), wall, user


def report(label: str, figures: list[tuple[float, float, float]], args: argparse.Namespace) -> None:
    """Print each run's figures and their median for one server."""
    print(
        f"{label}: batch={args.batch} clients={args.clients} requests={args.requests} "
        f"repeats={args.repeats}"
    )
    for cpu, wall, user in figures:
        print(
            f"  server CPU {cpu * 1e6 / args.requests:8.1f} us/request "
            f"(user {user * 1e6 / args.requests:6.1f}, "
            f"system {(cpu - user) * 1e6 / args.requests:6.1f}), "
            f"{args.requests / wall:8.0f} requests/s wall"
        )
    per_request = sorted(f[0] for f in figures)[len(figures) // 2] / args.requests * 1e6
    print(f"median server CPU per request: {per_request:.1f} us")
    if args.batch > 1:
        print(f"median server CPU per event:   {per_request / args.batch:.2f} us")


def main() -> None:
    """Parse arguments, start the servers, measure them in turn, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--servers",
        default="sigma",
        help="comma-separated: sigma, h11-floor (measured in turn within each repeat)",
    )
    parser.add_argument("--profile", default="", help="write py-spy samples of sigma to this file")
    parser.add_argument(
        "--sigma-ref", default="", help="benchmark sigma/ as committed at this git ref"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(names) - {"sigma", "h11-floor"})
    if unknown or not names:
        parser.error(f"--servers takes sigma and h11-floor, not {', '.join(unknown) or 'nothing'}")
    if args.clients and names != ["sigma"]:
        parser.error("--clients subscribes to sigma: use it with --servers sigma")
    if args.instructions:
        with tempfile.TemporaryDirectory(prefix="sigma-publish-cost-") as tmp:
            for name in names:
                count_instructions(name, args, Path(tmp))
        return
    with tempfile.TemporaryDirectory(prefix="sigma-publish-cost-") as tmp:
        factory = ServerFactory(
            Path(tmp),
            sigma_queue_size=max(4096, args.requests * args.batch),
            sigma_ref=args.sigma_ref,
        )
        servers: dict[str, Server] = {}
        stop = threading.Event()
        try:
            for name in names:
                servers[name] = factory.start(name)
            if args.clients:
                hold_subscribers(servers["sigma"].port, args.clients, stop)
            for server in servers.values():
                run_requests(server.port, args.batch, args.warmup)
            spy = None
            if args.profile and "sigma" in servers:
                spy = start_py_spy(servers["sigma"].pid, args.profile)
            figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
            for _ in range(args.repeats):
                for name, server in servers.items():
                    figures[name].append(measure(server, args))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                print(f"py-spy profile written to {args.profile}")
            for name in names:
                label = f"sigma {factory.versions()['sigma_commit']}" if name == "sigma" else name
                report(label, figures[name], args)
        finally:
            stop.set()
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
