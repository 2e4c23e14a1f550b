"""The publisher process: sends batches of ~200-byte JSON events to the server under test.

Every server gets the same request body, a JSON array of `{"type": ..., "data": ...}` objects,
and answers each batch before the next is sent (one batch in flight, like one HTTP/1.1
keep-alive connection):

- Sigma: `POST /api/publish` over one persistent HTTP/1.1 connection (h11 over a socket),
  answered `{"seqs": [...]}`.
- The peers: one text frame on a control WebSocket at `/publish`, answered `{"seqs": [...]}` on
  the same connection (the peers have no HTTP POST route; a control WebSocket is the cheapest
  equivalent they can offer with their stock libraries).

Every event in a batch carries the batch's send time as `"bt":<time.time_ns()>`, the last key
of `data`, so the clients can compute latency; `"bn"` is its number in this run.

Three pacings:
- `max`: flow control by window. A batch is sent only while the slowest client is at most
  `window` events behind what was published, so the rate is the fastest that every client keeps
  up with and nothing is dropped (the server's queues are configured larger than the window).
- `fixed`: `rate` events per second in batches every `tick` seconds, open loop; the achieved rate
  is reported (a server that cannot take the requests in time lowers it). With `single`, every
  event is its own request (Sigma: one JSON object, answered `{"seq": n}`; peers: one frame
  holding a one-event array), sent one after another on the same schedule.
- `flood`: open loop, not paced by the clients at all: the next batch goes as soon as the last
  was answered. A refused publish (Sigma's 503 `overloaded`) is counted and sent again at once.
  Several flood publishers may run side by side; each reports what was accepted and refused,
  and none of them writes the shared counters (those belong to the max/fixed publisher).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any
from urllib.parse import urlsplit

import h11
from _clients import Shared

EVENT_TYPE = "notification"
PAD = "x" * 56
"""Sized so an event is ~200 bytes on the wire with Sigma's envelope (type, timestamp, seq)."""


def batch_body(first: int, count: int, stamp_ns: int, *, single: bool = False) -> bytes:
    """A JSON array of `count` events numbered from `first`, all stamped `stamp_ns`.

    `single`: one event as a bare JSON object (Sigma's one-event request), not an array.
    """
    items = ",".join(
        f'{{"type":"{EVENT_TYPE}","data":{{"bn":{n},"pad":"{PAD}","bt":{stamp_ns}}}}}'
        for n in range(first, first + count)
    )
    return items.encode() if single else f"[{items}]".encode()


@dataclass(frozen=True)
class PublishPlan:
    """How the publisher reaches the server and paces itself."""

    kind: str
    """`http` (Sigma's publish API) or `ws` (a peer's control WebSocket)."""
    url: str
    api_key: str
    mode: str
    """`max` or `fixed`."""
    batch: int
    window: int = 0
    rate: float = 0.0
    tick_s: float = 0.01
    lifetime_s: float = 600.0
    single: bool = False
    """`fixed`: one event per request (or per frame), never batched."""
    ca_file: str | None = None
    """Over `https://`: the CA certificate to trust."""


class HttpPublisher:
    """Publishes to Sigma: `POST /api/publish` on one keep-alive HTTP/1.1 connection.

    h11 builds each request and parses each response over a plain blocking socket. A full
    client library (httpx) spent ~0.4 ms of Python per request between the publisher's
    timestamp and the bytes leaving, which every latency figure would then include; the peers'
    publisher (a `websockets` sync client sending one frame) spends a tenth of that.
    """

    def __init__(self, url: str, api_key: str, ca_file: str | None = None) -> None:
        parts = urlsplit(url)
        self.headers = [
            ("host", parts.netloc),
            ("authorization", f"Bearer {api_key}"),
            ("content-type", "application/json"),
        ]
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, body: bytes) -> None:
        """Publish `body`; raises unless it is answered 200."""
        status, reply = self.post(body)
        if status != 200:
            raise RuntimeError(f"publish answered {status}: {reply[:200]!r}")

    def post(self, body: bytes) -> tuple[int, bytes]:
        """Publish `body`; returns the status and the answer's body."""
        conn = self.conn
        request = h11.Request(
            method="POST",
            target="/api/publish",
            headers=[*self.headers, ("content-length", str(len(body)))],
        )
        events = (request, h11.Data(data=body), h11.EndOfMessage())
        self.sock.sendall(b"".join(conn.send(event) or b"" for event in events))
        status, reply = 0, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                reply += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError("the server closed the publish connection")
        conn.start_next_cycle()
        return status, reply

    def close(self) -> None:
        self.sock.close()


class WsPublisher:
    """Publishes to a peer: one text frame per batch on its `/publish` control WebSocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, compression=None, max_size=None, open_timeout=10)

    def send(self, body: bytes) -> None:
        self.ws.send(body, text=True)
        reply = self.ws.recv(timeout=30)
        if b'"seqs"' not in (reply.encode() if isinstance(reply, str) else reply):
            raise RuntimeError(f"publish answered {reply[:200]!r}")

    def close(self) -> None:
        self.ws.close()


def run_publisher(plan: PublishPlan, shared: Shared, results: Pipe) -> None:
    """Process entry point: connect, wait for the go flag, publish until told to stop, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    born = time.monotonic()
    report: dict[str, Any] = {"published": 0, "requests": 0, "error": None}
    publisher: HttpPublisher | WsPublisher | None = None
    try:
        publisher = (
            HttpPublisher(plan.url, plan.api_key, plan.ca_file)
            if plan.kind == "http"
            else WsPublisher(plan.url)
        )
        while shared[Shared.PUB_GO] == 0 and time.monotonic() - born < plan.lifetime_s:
            time.sleep(0.001)
        started = time.monotonic()
        if plan.mode == "max":
            _max_rate(plan, shared, publisher, report, born)
        elif plan.mode == "flood":
            _flood(plan, shared, publisher, report, born)
        else:
            _fixed_rate(plan, shared, publisher, report, born)
        report["elapsed_s"] = time.monotonic() - started
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        shared[Shared.PUB_ERRORS] = shared[Shared.PUB_ERRORS] + 1
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                publisher.close()
        with contextlib.suppress(OSError):
            results.send(report)
            results.close()


def _publish(
    publisher: Any, shared: Shared, report: dict[str, Any], count: int, *, single: bool = False
) -> None:
    first = report["published"]
    shared[Shared.SENT] = first + count
    if single and isinstance(publisher, HttpPublisher):
        publisher.send(batch_body(first, count, time.time_ns(), single=True))
    else:
        publisher.send(batch_body(first, count, time.time_ns()))
    report["published"] = first + count
    report["requests"] += 1
    shared[Shared.PUBLISHED] = first + count


def _max_rate(
    plan: PublishPlan, shared: Shared, publisher: Any, report: dict[str, Any], born: float
) -> None:
    while shared[Shared.PUB_GO] == 1 and time.monotonic() - born < plan.lifetime_s:
        behind = report["published"] + plan.batch - shared.fewest()
        if behind <= plan.window:
            _publish(publisher, shared, report, plan.batch)
        else:
            report["waits"] = report.get("waits", 0) + 1
            time.sleep(0.0002)


def _fixed_rate(
    plan: PublishPlan, shared: Shared, publisher: Any, report: dict[str, Any], born: float
) -> None:
    per_tick = 1 if plan.single else max(1, round(plan.rate * plan.tick_s))
    tick = per_tick / plan.rate
    start = time.monotonic()
    ticks = 0
    late = 0
    while shared[Shared.PUB_GO] == 1 and time.monotonic() - born < plan.lifetime_s:
        due = start + ticks * tick
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            continue
        if wait < -tick:
            late += 1
        _publish(publisher, shared, report, per_tick, single=plan.single)
        ticks += 1
    report["late_ticks"] = late
    report["batch"] = per_tick
    report["tick_s"] = tick


def _flood(
    plan: PublishPlan, shared: Shared, publisher: Any, report: dict[str, Any], born: float
) -> None:
    if not isinstance(publisher, HttpPublisher):
        raise RuntimeError("flood publishing is for Sigma's publish API (it can refuse)")
    report.update(refused=0, refused_events=0, other_statuses={}, refused_wait_s=0.0)
    while shared[Shared.PUB_GO] == 1 and time.monotonic() - born < plan.lifetime_s:
        sent_at = time.monotonic()
        status, _reply = publisher.post(batch_body(report["published"], plan.batch, time.time_ns()))
        if status == 200:
            report["published"] += plan.batch
            report["requests"] += 1
        elif status == 503:
            report["refused"] += 1
            report["refused_events"] += plan.batch
            report["refused_wait_s"] += time.monotonic() - sent_at
        else:
            key = str(status)
            report["other_statuses"][key] = report["other_statuses"].get(key, 0) + 1
