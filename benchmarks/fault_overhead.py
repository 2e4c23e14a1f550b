"""What a disarmed fault point costs on the hot paths: one attribute read.

Usage:
    python benchmarks/fault_overhead.py [--iterations N] [--repeats R]

Three measurements, each timed with the point disarmed ("checked") and with the check taken out
("unchecked"), in ns per call (best of R runs, and the median):

- `check`: the bare `if point.armed:` against an empty loop body;
- `hub`: the hub's loop body (`HubActor.handle` of one `Publish` to one client, whose queue is
  emptied every 1000 events), as `_serve` runs it, preceded or not by the `hub.publish` check;
- `sender`: the real `sigma.gateway.sender.send_backlog` (which passes the `sender.write` point)
  against a copy of its loop without the check, writing one frame per batch through a
  `ServerConnection` to a stream that discards it.

The differences are a few nanoseconds against microseconds of work; the `check` line shows the
raw cost. Noise between runs is of the same order, so read the two columns side by side.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import trio

from sigma.config import HubConfig
from sigma.faults import FaultPoint, Faults
from sigma.gateway.sender import send_backlog
from sigma.hub.actor import HubActor
from sigma.hub.frames import Frame, build_frame, reply_frame
from sigma.hub.messages import Client, Publish
from sigma.hub.outbox import Outbox
from sigma.log import configure_logging
from sigma.protocol import make_event, missed_events_notice
from sigma.websocket.connection import ServerConnection

HUB_CLIENTS = 1
DRAIN_EVERY = 1000


def best_and_median(run: Callable[[int], float], iterations: int, repeats: int) -> list[float]:
    """Nanoseconds per iteration of each of `repeats` runs."""
    return [run(iterations) / iterations for _ in range(repeats)]


# --- the bare check ------------------------------------------------------------------------------


def bare_checked(iterations: int) -> float:
    point = Faults().point("hub.publish")
    hits = 0
    started = time.perf_counter_ns()
    for _ in range(iterations):
        if point.armed:
            hits += 1
    return time.perf_counter_ns() - started


def bare_unchecked(iterations: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(iterations):
        pass
    return time.perf_counter_ns() - started


# --- the hub's loop body -------------------------------------------------------------------------


def new_hub() -> tuple[HubActor, list[Outbox]]:
    actor = HubActor(HubConfig(queue_size=1_000_000), heartbeat_interval_s=15.0)
    outboxes = [Outbox(1_000_000) for _ in range(HUB_CLIENTS)]
    for n, outbox in enumerate(outboxes):
        actor.state.join(Client(f"c{n}", outbox), since=None, epoch=None)
        outbox.take_batch()
    return actor, outboxes


def hub_run(checked: bool) -> Callable[[int], float]:
    def run(iterations: int) -> float:
        async def main() -> float:
            actor, outboxes = new_hub()
            point = Faults().point("hub.publish")
            message = Publish((make_event("notification", {"n": 1}),))
            started = time.perf_counter_ns()
            for _ in range(iterations // DRAIN_EVERY):
                if checked:
                    for _ in range(DRAIN_EVERY):
                        if point.armed:
                            await point.hit()
                        actor.handle(message)
                else:
                    for _ in range(DRAIN_EVERY):
                        actor.handle(message)
                for outbox in outboxes:
                    outbox.take_batch()
            return time.perf_counter_ns() - started

        return trio.run(main)

    return run


# --- the sender's loop ---------------------------------------------------------------------------


class DiscardingStream(trio.abc.Stream):
    """Takes every write; refills the outbox so that the sender's next batch is ready at once."""

    def __init__(self, outbox: Outbox, frame: Frame, writes: int) -> None:
        self.outbox = outbox
        self.frame = frame
        self.left = writes

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.left -= 1
        if self.left > 0:
            self.outbox.put(self.frame)
        else:
            self.outbox.close(1006, "done")  # 1006: no close frame is written

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def unchecked_backlog(outbox: Outbox, connection: ServerConnection) -> None:
    """`send_backlog` as of this writing, without the fault check."""
    while True:
        if connection.owes:
            await connection.write(b"")
        batch = outbox.take_batch()
        if not batch:
            close = outbox.close_reason
            if close is not None:
                await connection.send_close(close.code, close.reason)
            return
        chunks = [frame.data for frame in batch]
        del batch
        dropped = outbox.take_dropped()
        if dropped:
            chunks.insert(0, reply_frame(missed_events_notice(dropped)).data)
        await connection.write(b"".join(chunks))
        await trio.lowlevel.checkpoint()


def sender_run(checked: bool) -> Callable[[int], float]:
    def run(iterations: int) -> float:
        async def main() -> float:
            frame = build_frame(b'{"type":"notification","seq":1,"data":{}}', "notification")
            outbox = Outbox(16)
            stream = DiscardingStream(outbox, frame, iterations)
            connection = ServerConnection(stream, max_message_bytes=1 << 16, on_ping=print)
            outbox.put(frame)
            point: FaultPoint = Faults().point("sender.write")
            started = time.perf_counter_ns()
            if checked:
                await send_backlog(outbox, connection, point)
            else:
                await unchecked_backlog(outbox, connection)
            return time.perf_counter_ns() - started

        return trio.run(main)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    configure_logging("warning", "console")  # as in production: no debug line per broadcast
    cases: list[tuple[str, Callable[[int], float], Callable[[int], float], int]] = [
        ("check", bare_checked, bare_unchecked, args.iterations * 10),
        ("hub", hub_run(True), hub_run(False), args.iterations),
        ("sender", sender_run(True), sender_run(False), args.iterations),
    ]
    print(f"ns per call, best / median of {args.repeats} runs (disarmed point vs no check)")
    print(f"{'path':<8} {'checked':>18} {'unchecked':>18} {'difference':>12}")
    for name, checked, unchecked, iterations in cases:
        with_check: list[float] = []
        without: list[float] = []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            gc.collect()
            gc.disable()
            try:
                with_check += best_and_median(checked, iterations, 1)
                without += best_and_median(unchecked, iterations, 1)
            finally:
                gc.enable()
        best_with, best_without = min(with_check), min(without)
        print(
            f"{name:<8} {best_with:8.1f} / {statistics.median(with_check):7.1f} "
            f"{best_without:8.1f} / {statistics.median(without):7.1f} "
            f"{best_with - best_without:+11.1f}"
        )


if __name__ == "__main__":
    main()
