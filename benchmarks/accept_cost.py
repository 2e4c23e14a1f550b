"""Server cost of accepting WebSocket connections: CPU, instructions and RSS per connection.

Starts `sigma serve` (the fan-out benchmark's config), then opens N WebSocket connections from
bare sockets in this process, at most `--in-flight` handshakes at a time, each done once its
`101` and welcome have arrived, and holds them. It prints the server's CPU time (user and
system, psutil) and RSS growth per connection over the ramp. It is a script, not part of the
test suite; `fanout.py --scenarios idle,ramp` measures the same side by side with the peers.

    python benchmarks/accept_cost.py -n 5000                         # CPU and RSS per connection
    python benchmarks/accept_cost.py -n 5000 --sigma-ref 75aa8b9     # the same, sigma/ at a ref
    python benchmarks/accept_cost.py --instructions -n 1000          # instructions, under valgrind

`--instructions` counts the server's user-space instructions per connection (valgrind's
callgrind, switched on with `callgrind_control` after the warm-up and off once the measured
connections are welcomed, so neither start-up nor shutdown is counted). The count hardly depends
on what else runs on the machine, so it compares two commits on a busy one; it does not see the
kernel's work (accept, TCP, epoll).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from _servers import HOST, ServerFactory

CONNECT_TIMEOUT_S = 120.0
QUEUE_SIZE = 4096  # the fan-out benchmark's default


def upgrade_request(port: int) -> bytes:
    """A WebSocket upgrade request for `/ws` with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_connections(port: int, count: int, in_flight: int) -> list[socket.socket]:
    """Open `count` connections; return them once every one has its 101 and welcome."""
    selector = selectors.DefaultSelector()
    held: list[socket.socket] = []
    welcomed = 0
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while welcomed < count:
        while len(held) < count and len(held) - welcomed < in_flight:
            sock = socket.create_connection((HOST, port))
            sock.sendall(upgrade_request(port))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, bytearray())
            held.append(sock)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {welcomed} of {count} connections welcomed in time")
        for key, _ in selector.select(1.0):
            buffer: bytearray = key.data
            chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError("the server closed a connection during the ramp")
            buffer += chunk
            if b"\r\n\r\n" in buffer and b'"welcome"' in buffer:
                selector.unregister(key.fileobj)
                welcomed += 1
    selector.close()
    return held


def close_all(sockets: list[socket.socket]) -> None:
    """Close every socket in `sockets`."""
    for sock in sockets:
        sock.close()


def count_instructions(args: argparse.Namespace, tmp: Path) -> None:
    """Print the server's instructions per connection, counted by callgrind over the ramp."""
    out = tmp / "callgrind.out"
    launcher = (
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
    )
    factory = ServerFactory(tmp, QUEUE_SIZE, sigma_ref=args.sigma_ref, launcher=launcher)
    server = factory.start("sigma")
    held: list[socket.socket] = []
    try:
        held += open_connections(server.port, args.warmup, args.in_flight)
        time.sleep(1.0)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True
        )
        held += open_connections(server.port, args.connections, args.in_flight)
        time.sleep(1.0)  # the last welcomes' bookkeeping
        subprocess.run(
            ["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True
        )
        server.process.send_signal(signal.SIGTERM)
        close_all(held)
        server.process.wait(600)  # valgrind writes its count as the process exits
    finally:
        close_all(held)
        server.stop()
    found = re.findall(r"Collected\s*:\s*([\d,]+)", server.log_path.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no instruction count in the server's output:\n{server.log_tail()}")
    per_connection = int(found[-1].replace(",", "")) / args.connections
    print(
        f"sigma {factory.versions()['sigma_commit']}: connections={args.connections} "
        f"(after {args.warmup} warm-up)"
    )
    print(f"server instructions per connection: {per_connection:,.0f}")


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Print the server's CPU time and RSS growth per connection, for each repeat."""
    factory = ServerFactory(tmp, QUEUE_SIZE, sigma_ref=args.sigma_ref)
    figures = []
    for _ in range(args.repeats):
        server = factory.start("sigma")
        held: list[socket.socket] = []
        try:
            process = server.ps()
            held += open_connections(server.port, args.warmup, args.in_flight)
            time.sleep(0.5)
            before, rss_before = process.cpu_times(), process.memory_info().rss
            started = time.perf_counter()
            held += open_connections(server.port, args.connections, args.in_flight)
            wall = time.perf_counter() - started
            time.sleep(0.5)  # the welcomes' last bookkeeping
            after, rss_after = process.cpu_times(), process.memory_info().rss
        finally:
            close_all(held)
            server.stop()
        user = (after.user - before.user) / args.connections * 1e6
        system = (after.system - before.system) / args.connections * 1e6
        rss = (rss_after - rss_before) / args.connections / 1024
        figures.append((user + system, user, system, rss, wall))
    print(
        f"sigma {factory.versions()['sigma_commit']}: connections={args.connections} "
        f"repeats={args.repeats}"
    )
    for cpu, user, system, rss, wall in figures:
        print(
            f"  server CPU {cpu:6.1f} us/connection (user {user:6.1f}, system {system:5.1f}), "
            f"RSS {rss:5.2f} KB/connection, ramp {wall:5.2f} s"
        )
    middle = len(figures) // 2
    print(f"median server CPU per connection: {sorted(f[0] for f in figures)[middle]:.1f} us")
    print(f"median RSS per connection:        {sorted(f[3] for f in figures)[middle]:.2f} KB")


def main() -> None:
    """Parse arguments, start the server, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sigma-ref", default="", help="benchmark sigma/ as committed at this ref")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sigma-accept-cost-")))
        (count_instructions if args.instructions else measure)(args, tmp)


if __name__ == "__main__":
    main()
