"""The hub's cost per delivery of one event to many idle clients, in-process.

Builds a `HubState` with C clients, each an `Outbox` attached to a `ServerConnection` over one
end of a socket pair (its real `try_write`: `os.write` to the socket), or to a fake direct
writer that takes everything (`--writer fake`), and hands the same frame over to all of them N
times, as a publish of one event does (`_hand_over(..., alone=True)`). The other ends are
drained between rounds, outside the timed part. It is a script, not part of the test suite.

    python benchmarks/delivery_cost.py                      # µs per delivery (perf_counter)
    python benchmarks/delivery_cost.py --writer fake        # without the system call
    python benchmarks/delivery_cost.py --instructions       # instructions per delivery

`--instructions` runs the script twice under valgrind (cachegrind, no cache simulation), with
N rounds and with none, and divides the difference of the two totals by N x C (the drains are
counted too: one read per client every 50 rounds, a few dozen instructions per delivery).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from sigma.hub.frames import build_frame
from sigma.hub.messages import Client
from sigma.hub.outbox import Outbox
from sigma.hub.state import HubState
from sigma.protocol import ALL_EVENT_TYPES, encode_event, make_event
from sigma.websocket.connection import ServerConnection

ROUND = 50  # rounds between two drains: well inside a socket buffer


def run(clients: int, rounds: int, writer: str) -> float:
    """Hand `rounds` events to `clients` idle clients; return the seconds spent handing over."""
    state = HubState(history_size=16, max_subscriptions=8, heartbeat_interval_s=15.0)
    peers: list[socket.socket] = []
    every_type = frozenset(ALL_EVENT_TYPES)

    async def main() -> float:
        for number in range(clients):
            outbox = Outbox(256)
            if writer == "fake":
                outbox.attach(_no_sender, _takes_everything)
            else:
                ours, theirs = socket.socketpair()
                ours.setblocking(False)
                theirs.setblocking(False)
                peers.append(theirs)
                connection = ServerConnection(
                    trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
                    max_message_bytes=1 << 16,
                    on_ping=lambda payload: None,
                )
                outbox.attach(_no_sender, connection.try_write)
            client = Client(f"c{number}", outbox, allowed=every_type, subscriptions=every_type)
            state.join(client, since=None, epoch=None)
        state.flush()
        event = make_event("notification", {"bn": 1, "pad": "x" * 56, "bt": time.time_ns()})
        frame = build_frame(encode_event(event, 1), event.type, None, event=True)
        spent = 0.0
        done = 0
        while done < rounds:
            _drain(peers)
            batch = min(ROUND, rounds - done)
            started = time.perf_counter()
            for _ in range(batch):
                state._hand_over(frame, alone=True, seq=1, now=None)
                state._unflushed = 0  # as the flush after each inbox message does
            spent += time.perf_counter() - started
            done += batch
        _drain(peers)
        return spent

    return trio.run(main)


def _takes_everything(data: bytes, size: int) -> int:
    return size


def _no_sender() -> None:
    raise AssertionError("an idle client's socket took the event: no sender is started")


def _drain(peers: list[socket.socket]) -> None:
    for peer in peers:
        try:
            while os.read(peer.fileno(), 1 << 20):
                pass
        except BlockingIOError:
            pass


def count_instructions(args: argparse.Namespace) -> None:
    """Print the instructions per delivery: cachegrind's totals with N rounds and with none."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for rounds in (0, args.rounds):
            out = Path(tmp) / f"cg.{rounds}"
            command = [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                sys.executable,
                __file__,
                "--clients",
                str(args.clients),
                "--rounds",
                str(rounds),
                "--writer",
                args.writer,
                "--repeats",
                "1",
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            match = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
            if match is None:
                raise RuntimeError(result.stderr)
            totals.append(int(match.group(1).replace(",", "")))
    per_delivery = (totals[1] - totals[0]) / (args.rounds * args.clients)
    print(f"instructions per delivery: {per_delivery:,.0f}")


def main() -> None:
    """Parse the options and print the cost per delivery."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--writer", choices=("socket", "fake"), default="socket")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count under valgrind")
    args = parser.parse_args()
    if args.instructions:
        count_instructions(args)
        return
    if args.rounds == 0:
        run(args.clients, 0, args.writer)
        return
    best = min(run(args.clients, args.rounds, args.writer) for _ in range(args.repeats))
    print(f"µs per delivery: {best / (args.rounds * args.clients) * 1e6:.3f}")


if __name__ == "__main__":
    main()
