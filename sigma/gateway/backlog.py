"""How much a client's socket still holds: bytes written to it that the peer has not acknowledged.

The hub's overload rule (`sigma.hub.overload`) measures how far behind each client is. What is
queued in its `Outbox` is only part of that: the kernel's send buffer, which Linux grows to
megabytes on a fast link, can hold far more, and so can the connection itself (the rest of a
frame the socket took only in part). Without it every client looks level with the hub
until its kernel buffer is full, and then the first client to fill up looks far behind the
rest even when the whole herd is behind. `unsent_bytes` reads the send queue (Linux
`SIOCOUTQ`); where that cannot be asked it answers 0.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import termios
from collections.abc import Callable
from typing import Protocol

import trio

SIOCOUTQ = termios.TIOCOUTQ
"""Linux: on a TCP socket, the bytes in the send queue not yet acknowledged by the peer."""


def unsent_bytes(sock: trio.socket.SocketType) -> int:
    """Bytes in `sock`'s kernel send queue; 0 when closed or when the system cannot tell."""
    fd = sock.fileno()
    if fd < 0:
        return 0
    out = array.array("i", [0])
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, SIOCOUTQ, out, True)
        return out[0]
    return 0


class Owing(Protocol):
    """A connection that may hold the unwritten rest of a frame (`ServerConnection`)."""

    @property
    def owed_bytes(self) -> int:
        """Bytes it holds for the socket."""
        ...


def backlog_probe(stream: trio.abc.Stream, connection: Owing) -> Callable[[], int]:
    """What `connection` and the socket under `stream` still hold for the client, in bytes:
    the rest of a frame the socket took only in part, plus the kernel's send queue."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream):
        sock = transport.socket
        return lambda: connection.owed_bytes + unsent_bytes(sock)
    return lambda: connection.owed_bytes
