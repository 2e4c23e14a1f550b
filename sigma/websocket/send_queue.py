"""How much a client's socket still holds: bytes written to it that the peer has not acknowledged.

The hub's overload rule (`sigma.hub.overload`) measures how far behind each client is. What is
queued in its `Outbox` is only part of that: the kernel's send buffer, which Linux grows to
megabytes on a fast link, can hold far more, and so can the connection itself (the rest of a
frame the socket took only in part). Without it every client looks level with the hub
until its kernel buffer is full, and then the first client to fill up looks far behind the
rest even when the whole herd is behind. `unsent_bytes` reads the send queue (Linux
`SIOCOUTQ`); where that cannot be asked it answers 0. `ServerConnection.backlog_bytes` adds
what the connection itself owes.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import termios

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
