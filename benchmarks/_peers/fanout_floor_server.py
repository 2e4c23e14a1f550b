"""The floor under Sigma's fan-out of single-event publishes: trio, h11 and wsproto doing only
what every such server must.

- `POST` (any target): a publish, as Sigma's API takes it. The body is one
  `{"type": ..., "data": ...}` object (answered `{"seq": n}`) or a JSON array of them (answered
  `{"seqs": [...]}`). Each event gets the next seq and a timestamp, is encoded once with Sigma's
  envelope (`type`, `timestamp`, `seq`, `data`) and framed once, by Sigma's own frame writer
  (`sigma.websocket.frames.text_frame`; wsproto has no public one). The frame is written with
  one `os.write` to every subscriber's socket. No authorisation, validation, queue, history,
  backpressure or metrics: a subscriber whose socket does not take a whole frame at once is
  dropped.
- A WebSocket upgrade (any target): a subscriber. h11 reads the request, wsproto computes the
  accept token, and the 101 goes out with a welcome frame (no `"bt"` marker) in one write. From
  then on the server only reads the subscriber's socket to notice that it left.

I/O as Sigma's: one `wait_readable` per read, one `os.read`, one `os.write` per answer and per
delivery. What this costs at a given rate and fan-out is what any server built on trio, h11 and
wsproto pays before it does any work of its own, measured beside Sigma and the peers by
`fanout.py --servers sigma,fanout-floor,node`.

    python benchmarks/_peers/fanout_floor_server.py PORT
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import h11
import orjson
import trio
from wsproto.utilities import generate_accept_token

from sigma.websocket.frames import text_frame

HOST = "127.0.0.1"
READ_SIZE = 65536
END = h11.EndOfMessage()
SUBSCRIBERS: dict[int, trio.socket.SocketType] = {}
"""Every subscriber's socket, by its file descriptor."""
SEQ = [0]


def broadcast(item: dict[str, object]) -> int:
    """Number `item`, frame it once and write it to every subscriber; its seq."""
    SEQ[0] += 1
    seq = SEQ[0]
    envelope = {
        "type": item["type"],
        "timestamp": datetime.now(UTC).isoformat(),
        "seq": seq,
        "data": item["data"],
    }
    frame = text_frame(orjson.dumps(envelope))
    for fd in list(SUBSCRIBERS):
        try:
            if os.write(fd, frame) == len(frame):
                continue
        except OSError:
            pass
        SUBSCRIBERS.pop(fd).close()  # it fell behind or left: the floor keeps no queue
    return seq


def answer_of(body: bytes) -> bytes:
    """Publish what `body` holds; the JSON answer."""
    parsed = orjson.loads(body)
    if isinstance(parsed, list):
        return orjson.dumps({"seqs": [broadcast(item) for item in parsed]})
    return orjson.dumps({"seq": broadcast(parsed)})


def head_for(length: int) -> h11.Response:
    """The `200` head of a JSON body of `length` bytes."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]
    return h11.Response(status_code=200, headers=headers, reason=b"OK")


def switch_for(request: h11.Request) -> h11.InformationalResponse:
    """The 101 that accepts `request`'s WebSocket upgrade."""
    key = dict(request.headers).get(b"sec-websocket-key", b"")
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key)),
    ]
    return h11.InformationalResponse(
        status_code=101, headers=headers, reason=b"Switching Protocols"
    )


async def subscribe(sock: trio.socket.SocketType, fd: int) -> None:
    """Hold a subscriber until it leaves, reading (and ignoring) what it sends."""
    SUBSCRIBERS[fd] = sock
    try:
        while fd in SUBSCRIBERS:
            await trio.lowlevel.wait_readable(sock)
            if not os.read(fd, READ_SIZE):
                return
    except (OSError, trio.ClosedResourceError):  # it left, or `broadcast` dropped it
        return
    finally:
        SUBSCRIBERS.pop(fd, None)


async def serve_connection(stream: trio.SocketStream) -> None:
    """Answer publishes on one connection, or hold it as a subscriber once it upgrades."""
    sock = stream.socket
    fd = sock.fileno()
    connection = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body = b""
    while True:
        await trio.lowlevel.wait_readable(sock)
        data = os.read(fd, READ_SIZE)
        if not data:
            return
        connection.receive_data(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                if connection.their_state is not h11.DONE:  # an upgrade: h11 waits for our 101
                    welcome = {"type": "notification", "seq": None, "data": {"kind": "welcome"}}
                    switch = connection.send(switch_for(request)) or b""
                    os.write(fd, switch + text_frame(orjson.dumps(welcome)))
                    await subscribe(sock, fd)
                    return
                reply = answer_of(body)
                out = connection.send(head_for(len(reply))) or b""
                out += connection.send(h11.Data(data=reply)) or b""
                out += connection.send(END) or b""
                os.write(fd, out)  # a short answer: the socket takes it whole
                connection.start_next_cycle()


async def main(port: int) -> None:
    """Listen on 127.0.0.1:`port` and serve connections until killed."""
    listeners = await trio.open_tcp_listeners(port, host=HOST, backlog=1024)
    print(f"listening on {HOST}:{port}", flush=True)
    await trio.serve_listeners(serve_connection, listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
