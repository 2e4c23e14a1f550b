"""The floor under Sigma's publish path: trio and h11 doing nothing but HTTP.

Answers every request, whatever its target or body, with what Sigma answers a single-event
publish (`200`, `application/json`, `{"seq":N}`), on keep-alive, with the I/O Sigma uses: one
`wait_readable` per request, one `os.read`, one `os.write` of the whole answer. No
authorisation, validation, event, hub or fan-out: what this costs per request is what any
server built on trio and h11 pays before it does any work of its own.

    python benchmarks/_peers/h11_floor_server.py PORT
"""

from __future__ import annotations

import os
import sys

import h11
import trio

HOST = "127.0.0.1"
READ_SIZE = 65536
END = h11.EndOfMessage()
HEADS: dict[int, h11.Response] = {}
"""The answer's head by body length, built once (as Sigma does): h11 events are immutable."""


def head_for(length: int) -> h11.Response:
    """The `200` head of a JSON body of `length` bytes."""
    head = HEADS.get(length)
    if head is None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]
        head = HEADS[length] = h11.Response(status_code=200, headers=headers, reason=b"OK")
    return head


async def serve_connection(stream: trio.SocketStream) -> None:
    """Answer requests on one connection until the client closes it."""
    sock = stream.socket
    fd = sock.fileno()
    connection = h11.Connection(h11.SERVER)
    seq = 0
    while True:
        await trio.lowlevel.wait_readable(sock)
        data = os.read(fd, READ_SIZE)
        if not data:
            return
        connection.receive_data(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.EndOfMessage):
                seq += 1
                body = b'{"seq":%d}' % seq
                answer = connection.send(head_for(len(body)))
                answer += connection.send(h11.Data(data=body)) + connection.send(END)
                os.write(fd, answer)  # a short answer: the socket takes it whole
                connection.start_next_cycle()


async def main(port: int) -> None:
    """Listen on 127.0.0.1:`port` and serve connections until killed."""
    listeners = await trio.open_tcp_listeners(port, host=HOST)
    await trio.serve_listeners(serve_connection, listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
