"""Benchmark clients: worker processes that each hold many WebSocket connections.

A worker is one process with one `epoll` loop over non-blocking sockets (wrapped in TLS by the
`ssl` module, with its handshake stepped in the same loop, when the server speaks `wss://`:
`WorkerPlan.ca_file`). The HTTP upgrade is
done by wsproto (it builds the request and parses the `101` response); after that the worker
reads server frames straight off the socket. Server frames are never masked, so splitting them
needs only the 2/4/10-byte header and the payload length (`split_frames`). That is several times
cheaper than wsproto's `FrameDecoder` (see `python benchmarks/_clients.py`, which measures both),
and it keeps the clients from being the bottleneck on a 2-core machine.

Every event published by the benchmark carries its send time (`time.time_ns()`, comparable across
processes) as `"bt":<19 digits>` inside `data`; a client finds it with one `bytes.find` and
records `receive time - send time` into a histogram of 10 us buckets. The first text frame
without that marker is the server's welcome: it says the server has registered the client, so
the worker counts the connection as ready.

Workers talk to the orchestrator through a shared array (`Shared`): the orchestrator moves the
phase, each worker reports how many of its connections are ready, the fewest events any of its
connections has received (the publisher's flow control reads it), and its total.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.sharedctypes import RawArray
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request, TextMessage

MARKER = b'"bt":'
"""Precedes the publisher's send timestamp (nanoseconds, 19 digits) in every event."""
STAMP_DIGITS = 19
TAIL_FROM_MARKER = len(MARKER) + STAMP_DIGITS + 2
"""Events end with `"bt":<stamp>}}`: the marker starts this many bytes before the frame's end."""
BUCKET_NS = 10_000
"""Latency histogram resolution: 10 microseconds."""
N_BUCKETS = 1_000_000
"""Histogram covers 0 .. 10 s; anything slower lands in the last bucket (max is kept exactly)."""
RECV_BYTES = 256 * 1024
"""One read takes at most this much, into a buffer the worker reuses.

Reading with `recv(RECV_BYTES)` instead would allocate 256 KiB per call; glibc serves that with
`mmap`, and the page faults, `mremap` and TLB shootdowns that follow cost the worker as much
kernel time as the reads themselves, and in a way that varies from run to run."""
MAX_HANDSHAKES_IN_FLIGHT = 64
STALLED_RCVBUF_BYTES = 4096

# Phases, written by the orchestrator and read by workers and the publisher.
PHASE_CONNECT = 0
PHASE_MEASURE = 1
PHASE_DRAIN = 2
PHASE_REPORT = 3


class FramingError(Exception):
    """The byte stream is not a sequence of unmasked server frames (the reader lost framing)."""


class Shared:
    """Counters shared by the orchestrator, the publisher and the workers (one int64 array).

    Slots: phase, publisher go flag, events published (acknowledged), events sent, publisher
    errors, and for each worker: ready connections, fewest events received by any of its open
    connections, total events received, connections closed by the server.
    """

    PHASE, PUB_GO, PUBLISHED, SENT, PUB_ERRORS = range(5)
    HEADER = 5
    PER_WORKER = 4

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self.array = RawArray("q", self.HEADER + self.PER_WORKER * n_workers)

    def _slot(self, worker: int, offset: int) -> int:
        return self.HEADER + self.PER_WORKER * worker + offset

    def set_worker(self, worker: int, ready: int, fewest: int, total: int, closed: int) -> None:
        """Publish one worker's counters."""
        base = self._slot(worker, 0)
        a = self.array
        a[base], a[base + 1], a[base + 2], a[base + 3] = ready, fewest, total, closed

    def ready(self) -> int:
        """Connections ready over all workers."""
        return sum(self.array[self._slot(w, 0)] for w in range(self.n_workers))

    def fewest(self) -> int:
        """The fewest events any open connection has received."""
        return min(self.array[self._slot(w, 1)] for w in range(self.n_workers))

    def total(self) -> int:
        """Events received, summed over every connection."""
        return sum(self.array[self._slot(w, 2)] for w in range(self.n_workers))

    def closed(self) -> int:
        """Connections the server closed or dropped."""
        return sum(self.array[self._slot(w, 3)] for w in range(self.n_workers))

    def __getitem__(self, index: int) -> int:
        return int(self.array[index])

    def __setitem__(self, index: int, value: int) -> None:
        self.array[index] = value


@dataclass
class LatencyStats:
    """A histogram of latencies in 10 us buckets, plus the exact maximum."""

    buckets: Counter[int] = field(default_factory=Counter)
    max_ns: int = 0

    def merge(self, other: LatencyStats) -> None:
        """Add another histogram to this one."""
        self.buckets.update(other.buckets)
        self.max_ns = max(self.max_ns, other.max_ns)

    @property
    def count(self) -> int:
        """How many latencies were recorded."""
        return sum(self.buckets.values())

    def percentile_ms(self, pct: float) -> float | None:
        """The latency under which `pct` % of samples fall (bucket upper bound), in ms."""
        total = self.count
        if not total:
            return None
        wanted = total * pct / 100.0
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= wanted:
                return min((bucket + 1) * BUCKET_NS, max(self.max_ns, 0)) / 1e6
        return self.max_ns / 1e6


class ClientConn:
    """One benchmark connection: a socket, its handshake, then a raw frame reader."""

    __slots__ = ("buf", "close_code", "closed", "ready", "received", "sock", "state", "ws")

    CONNECTING, TLS, HANDSHAKE, OPEN = range(4)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = self.CONNECTING
        self.ws: WSConnection | None = WSConnection(ConnectionType.CLIENT)
        self.buf = b""
        self.received = 0
        self.ready = False
        self.closed = False
        self.close_code: int | None = None


def upgrade_request(host: str, port: int, path: str) -> tuple[WSConnection, bytes]:
    """A fresh wsproto client connection and the upgrade request bytes it produced."""
    ws = WSConnection(ConnectionType.CLIENT)
    return ws, ws.send(Request(host=f"{host}:{port}", target=path))


def pong_frame(payload: bytes) -> bytes:
    """A masked client PONG frame echoing `payload` (at most 125 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:125]))
    return bytes((0x8A, 0x80 | len(masked))) + mask + masked


def split_frames(
    conn: ClientConn, data: bytes, now_ns: int, hist: list[int] | None, worst: list[int]
) -> None:
    """Split `data` (plus any partial frame left from before) into server frames and count them.

    Events increment `conn.received`; when `hist` is given their latency is recorded in it and
    `worst[0]` keeps the largest. A text frame without the timestamp marker is the welcome
    (it marks the connection ready). Close frames record the code, pings are answered.
    """
    buf = conn.buf + data if conn.buf else data
    end = len(buf)
    pos = 0
    got = 0
    last_stamp = b""
    sent = 0
    while end - pos >= 2:
        length = buf[pos + 1]
        if length < 126:
            start = pos + 2
        elif length == 126:
            if end - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            start = pos + 4
        elif length == 127:
            if end - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        else:
            raise FramingError(f"masked or malformed frame header {buf[pos : pos + 2]!r}")
        stop = start + length
        if stop > end:
            break
        head = buf[pos]
        if head == 0x81:
            # Fast path: events end with `"bt":<19 digits>}}`; else search the payload.
            mark = stop - TAIL_FROM_MARKER
            if not buf.startswith(MARKER, mark):
                mark = buf.find(MARKER, start, stop)
            if mark >= start:
                got += 1
                if hist is not None:
                    stamp = buf[mark + 5 : mark + 5 + STAMP_DIGITS]
                    if stamp != last_stamp:  # a published batch shares one stamp
                        last_stamp = stamp
                        sent = int(stamp)
                    latency = now_ns - sent
                    bucket = latency // BUCKET_NS
                    hist[bucket if bucket < N_BUCKETS else N_BUCKETS - 1] += 1
                    if latency > worst[0]:
                        worst[0] = latency
            else:
                conn.ready = True
        elif head == 0x88:
            conn.close_code = (
                struct.unpack("!H", buf[start : start + 2])[0] if length >= 2 else 1005
            )
        elif head == 0x89:
            with contextlib.suppress(OSError):
                conn.sock.send(pong_frame(buf[start:stop]))
        elif head != 0x8A and head != 0x82:
            raise FramingError(f"unexpected frame head 0x{head:02x} (fragmented or reserved)")
        pos = stop
    conn.buf = buf[pos:] if pos < end else b""
    conn.received += got


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker does: how many connections to which server, and how to report."""

    index: int
    host: str
    port: int
    path: str
    connections: int
    connect_timeout_s: float
    lifetime_s: float
    """Hard bound on the worker's life; it exits by itself after this long."""
    read_pause_s: float = 0.0
    """Sleep this long after each pass over ready sockets, so reads coalesce many frames."""
    ca_file: str | None = None
    """Speak TLS (`wss://`), trusting this CA certificate; None: plain TCP (`ws://`)."""


def run_worker(plan: WorkerPlan, shared: Shared, results: Pipe) -> None:
    """Process entry point: connect, read until the orchestrator asks for the report, report.

    Exits by itself when the parent process is gone or after `plan.lifetime_s`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops workers
    parent = os.getppid()
    born = time.monotonic()
    ep = select.epoll()
    buffer = memoryview(bytearray(RECV_BYTES))
    conns: dict[int, ClientConn] = {}
    pending: set[int] = set()  # connections not yet ready (handshake or welcome outstanding)
    to_open = plan.connections
    errors: Counter[str] = Counter()
    recording: list[int] | None = None
    recorded: list[int] | None = None
    worst = [0]
    counts_at: dict[int, int] = {}
    phase_seen = PHASE_CONNECT
    report_every = 0.002 + 1e-6 * plan.connections
    next_report = 0.0
    connect_deadline = born + plan.connect_timeout_s
    tls = ssl.create_default_context(cafile=plan.ca_file) if plan.ca_file else None
    try:
        while time.monotonic() - born < plan.lifetime_s:
            now_mono = time.monotonic()
            # Open more connections, a bounded number of handshakes at a time.
            while (
                to_open and len(pending) < MAX_HANDSHAKES_IN_FLIGHT and now_mono < connect_deadline
            ):
                to_open -= 1
                conn = _start_connect(plan, errors)
                if conn is not None:
                    fd = conn.sock.fileno()
                    conns[fd] = conn
                    pending.add(fd)
                    ep.register(fd, select.EPOLLOUT | select.EPOLLIN)
            events = ep.poll(0.002)
            now_ns = time.time_ns()
            for fd, mask in events:
                conn = conns[fd]
                if conn.state == ClientConn.OPEN:
                    try:
                        if tls is None:
                            data = buffer[: conn.sock.recv_into(buffer)].tobytes()
                        else:
                            data = _read_tls(conn.sock, buffer)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        continue
                    except ssl.SSLZeroReturnError:
                        data = b""
                    except OSError as exc:
                        errors[f"recv: {exc.strerror}"] += 1
                        data = b""
                    if not data:
                        _drop(ep, conn)
                    else:
                        try:
                            split_frames(conn, data, now_ns, recording, worst)
                        except FramingError as exc:
                            errors[str(exc)[:80]] += 1
                            _drop(ep, conn)
                else:
                    _handshake_step(conn, mask, ep, plan, errors, tls)
                if pending and fd in pending and (conn.ready or conn.closed):
                    pending.discard(fd)
            if events and plan.read_pause_s:
                time.sleep(plan.read_pause_s)
            if now_mono < next_report:
                continue
            next_report = now_mono + report_every
            phase = shared[Shared.PHASE]
            if phase != phase_seen:
                total_now = sum(c.received for c in conns.values())
                if phase >= PHASE_MEASURE > phase_seen:
                    counts_at[PHASE_MEASURE] = total_now
                    recording = [0] * N_BUCKETS
                if phase >= PHASE_DRAIN > phase_seen:
                    counts_at[PHASE_DRAIN] = total_now
                    counts_at.setdefault(PHASE_MEASURE, total_now)
                    recorded, recording = recording, None
                phase_seen = phase
            _publish_counters(plan.index, conns, shared)
            if phase_seen >= PHASE_REPORT or os.getppid() != parent:
                break
            if now_mono > connect_deadline and pending:
                for fd in pending:  # handshakes that never finished: give up on them
                    errors["handshake timeout"] += 1
                    _drop(ep, conns[fd])
                pending.clear()
        results.send(_report(plan, conns, counts_at, recorded, worst[0], errors))
    finally:
        for conn in conns.values():
            with contextlib.suppress(OSError):
                conn.sock.close()
        ep.close()
        results.close()


def _start_connect(plan: WorkerPlan, errors: Counter[str]) -> ClientConn | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    code = sock.connect_ex((plan.host, plan.port))
    if code not in (0, errno.EINPROGRESS):
        errors[f"connect: {os.strerror(code)}"] += 1
        sock.close()
        return None
    return ClientConn(sock)


def _read_tls(sock: socket.socket, buffer: memoryview) -> bytes:
    """What a TLS socket has ready, up to `RECV_BYTES`: one `recv_into` yields one TLS record at
    most (16 KiB), so read on until it would block. Raises `ssl.SSLWantReadError` when nothing
    at all was ready."""
    chunks: list[bytes] = []
    size = 0
    while size < RECV_BYTES:
        try:
            got = sock.recv_into(buffer[: RECV_BYTES - size])
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if chunks:
                break
            raise
        if not got:
            break
        chunks.append(buffer[:got].tobytes())
        size += got
    return b"".join(chunks)


def _handshake_step(
    conn: ClientConn,
    mask: int,
    ep: select.epoll,
    plan: WorkerPlan,
    errors: Counter[str],
    tls: ssl.SSLContext | None,
) -> None:
    sock = conn.sock
    if conn.state == ClientConn.CONNECTING:
        if not mask & select.EPOLLOUT:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            errors[f"connect: {os.strerror(err)}"] += 1
            _drop(ep, conn)
            return
        if tls is None:
            _send_upgrade(conn, ep, plan)
            return
        # The same file descriptor, now behind TLS; its handshake is stepped below.
        conn.sock = tls.wrap_socket(sock, server_hostname=plan.host, do_handshake_on_connect=False)
        conn.state = ClientConn.TLS
    if conn.state == ClientConn.TLS:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            ep.modify(conn.sock.fileno(), select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            ep.modify(conn.sock.fileno(), select.EPOLLOUT)
            return
        except OSError as exc:
            errors[f"tls handshake: {exc}"[:80]] += 1
            _drop(ep, conn)
            return
        _send_upgrade(conn, ep, plan)
        return
    # HANDSHAKE: feed wsproto until it has seen the 101; then frames are ours to read.
    try:
        data = sock.recv(RECV_BYTES)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return
    except OSError as exc:
        errors[f"handshake recv: {exc.strerror}"] += 1
        data = b""
    if not data:
        errors["closed during handshake"] += 1
        _drop(ep, conn)
        return
    ws = conn.ws
    assert ws is not None
    ws.receive_data(data)
    for event in ws.events():
        if isinstance(event, AcceptConnection):
            conn.state = ClientConn.OPEN
        elif isinstance(event, RejectConnection):
            errors[f"rejected: HTTP {event.status_code}"] += 1
            _drop(ep, conn)
            return
        elif isinstance(event, TextMessage):
            # Frames that arrived in the same read as the 101 (the welcome, normally).
            if MARKER in event.data.encode():
                conn.received += 1
            else:
                conn.ready = True
    if conn.state == ClientConn.OPEN:
        conn.ws = None  # from here on frames are split by `split_frames`


def _send_upgrade(conn: ClientConn, ep: select.epoll, plan: WorkerPlan) -> None:
    assert conn.ws is not None
    conn.sock.send(conn.ws.send(Request(host=f"{plan.host}:{plan.port}", target=plan.path)))
    conn.state = ClientConn.HANDSHAKE
    ep.modify(conn.sock.fileno(), select.EPOLLIN)


def _drop(ep: select.epoll, conn: ClientConn) -> None:
    if conn.closed:
        return
    conn.closed = True
    with contextlib.suppress(OSError, ValueError):
        ep.unregister(conn.sock.fileno())
    with contextlib.suppress(OSError):
        conn.sock.close()


def _publish_counters(index: int, conns: dict[int, ClientConn], shared: Shared) -> None:
    ready = 0
    fewest = 1 << 62
    total = 0
    closed = 0
    for conn in conns.values():
        total += conn.received
        if conn.closed:
            closed += 1
            continue
        if conn.ready:
            ready += 1
            if conn.received < fewest:
                fewest = conn.received
    shared.set_worker(index, ready, fewest, total, closed)


def _report(
    plan: WorkerPlan,
    conns: dict[int, ClientConn],
    counts_at: dict[int, int],
    hist: list[int] | None,
    worst_ns: int,
    errors: Counter[str],
) -> dict[str, Any]:
    buckets = {i: n for i, n in enumerate(hist) if n} if hist is not None else {}
    close_codes = Counter(
        str(c.close_code) if c.close_code is not None else "eof"
        for c in conns.values()
        if c.closed or c.close_code is not None
    )
    return {
        "worker": plan.index,
        "connections": len(conns),
        "ready": sum(1 for c in conns.values() if c.ready),
        "open": sum(1 for c in conns.values() if not c.closed and c.ready),
        "received": [c.received for c in conns.values() if c.ready],
        "received_open": [
            c.received for c in conns.values() if c.ready and not c.closed and c.close_code is None
        ],
        "at_measure": counts_at.get(PHASE_MEASURE, 0),
        "at_drain": counts_at.get(PHASE_DRAIN, 0),
        "hist": buckets,
        "max_ns": worst_ns,
        "close_codes": dict(close_codes),
        "errors": dict(errors),
    }


# --- the stalled client -------------------------------------------------------------------------


def open_stalled(
    host: str, port: int, path: str, timeout_s: float = 10.0, *, ca_file: str | None = None
) -> socket.socket:
    """Connect a client that completes the handshake and then never reads.

    Its receive buffer is shrunk before connecting (so the TCP window stays tiny); the server
    has to hold, or drop, whatever it wants to send it. With `ca_file`, over TLS.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF_BYTES)
    sock.settimeout(timeout_s)
    sock.connect((host, port))
    if ca_file is not None:
        sock = ssl.create_default_context(cafile=ca_file).wrap_socket(sock, server_hostname=host)
    ws, request = upgrade_request(host, port, path)
    sock.sendall(request)
    deadline = time.monotonic() + timeout_s
    accepted = ready = False
    while not (accepted and ready) and time.monotonic() < deadline:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("server closed the stalled client during its handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
            elif isinstance(event, RejectConnection):
                raise ConnectionError(f"stalled client rejected: HTTP {event.status_code}")
            elif isinstance(event, TextMessage):
                ready = True
    if not (accepted and ready):
        raise TimeoutError("stalled client: no welcome in time")
    return sock


def open_reader(sock: socket.socket) -> ClientConn:
    """A `ClientConn` for a socket `open_stalled` made: past its handshake, read raw, each read
    bounded to 0.2 s."""
    conn = ClientConn(sock)
    conn.state = ClientConn.OPEN
    conn.ws = None
    sock.settimeout(0.2)
    return conn


def drain_stalled(sock: socket.socket, timeout_s: float) -> dict[str, Any]:
    """Read what the server had queued for the stalled client, bounded in time.

    Returns how many events and bytes were waiting and whether the server had closed it (and
    with which code). Frames already split by the handshake reader are not counted.
    """
    conn = open_reader(sock)
    deadline = time.monotonic() + timeout_s
    total_bytes = 0
    eof = False
    worst = [0]
    while time.monotonic() < deadline:
        try:
            data = sock.recv(RECV_BYTES)
        except TimeoutError:
            break
        except OSError:
            eof = True
            break
        if not data:
            eof = True
            break
        total_bytes += len(data)
        try:
            split_frames(conn, data, time.time_ns(), None, worst)
        except FramingError:
            break
    return {
        "events_waiting": conn.received,
        "bytes_waiting": total_bytes,
        "close_code": conn.close_code,
        "eof": eof,
        "read_all": eof or time.monotonic() < deadline,
    }


def read_slowly(
    sock: socket.socket, bytes_per_s: int, stop: threading.Event, chunk: int = 4096
) -> dict[str, Any]:
    """Read a client opened by `open_stalled` at no more than `bytes_per_s`, steadily, until
    the server closes it or `stop` is set: a reader slower than what is published.

    Returns how many events it read, the close code the server sent (None if none), and after
    how many seconds of reading the connection ended (None while it was still open).
    """
    conn = open_reader(sock)
    started = time.monotonic()
    period_s = chunk / bytes_per_s
    ended_after: float | None = None
    next_read = started
    while not stop.is_set():
        time.sleep(max(0.0, next_read - time.monotonic()))
        next_read += period_s
        try:
            data = sock.recv(chunk)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if not data:
            ended_after = time.monotonic() - started
            break
        try:
            split_frames(conn, data, time.time_ns(), None, [0])
        except FramingError:
            break
        if conn.close_code is not None:
            ended_after = time.monotonic() - started
            break
    return {
        "events_read": conn.received,
        "close_code": conn.close_code,
        "ended_after_s": ended_after,
    }


# --- reader microbenchmark -----------------------------------------------------------------------


def _compare_readers(n_frames: int = 200_000) -> None:
    """Time `split_frames` against wsproto's client `Connection` on the same server frames."""
    from wsproto.connection import Connection, ConnectionType

    from sigma.websocket.frames import text_frame

    stamp = str(time.time_ns())
    payload = (
        '{"type":"notification","timestamp":"2026-01-28T12:50:32.786261+00:00","seq":123456,'
        f'"data":{{"bn":123456,"pad":"{"x" * 60}","bt":{stamp}}}}}'
    )
    frame = text_frame(payload.encode())
    chunk = frame * 100
    chunks = [chunk] * (n_frames // 100)
    conn = ClientConn(socket.socket())
    hist = [0] * N_BUCKETS
    started = time.perf_counter()
    for data in chunks:
        split_frames(conn, data, time.time_ns(), hist, [0])
    raw_s = time.perf_counter() - started
    protocol = Connection(ConnectionType.CLIENT)
    started = time.perf_counter()
    count = 0
    for data in chunks:
        protocol.receive_data(data)
        for _event in protocol.events():
            count += 1
    wsproto_s = time.perf_counter() - started
    conn.sock.close()
    print(f"frame size {len(frame)} B, {n_frames} frames in reads of 100")
    print(f"split_frames (with latency): {raw_s / n_frames * 1e9:7.0f} ns/frame")
    print(f"wsproto Connection          : {wsproto_s / n_frames * 1e9:7.0f} ns/frame")


if __name__ == "__main__":
    _compare_readers()
