"""The listening sockets and the loop that accepts connections on them.

`open_listeners` binds `[gateway] host:port` (one SO_REUSEPORT socket per address with
`reuse_port`); `accept_forever` hands each accepted connection, with its peer's address, to the
gateway's handler in a task of its own.

The listening sockets are plain `socket.socket`s, accepted from without trio's socket wrapper:
trio's `accept` passes through the scheduler once more after every connection it takes, even
when it takes it at once. Here one wake-up takes every connection that waits (up to
`ACCEPTS_PER_WAKE`), as asyncio's accept loop does, and trio is entered again only to wait.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable

import structlog
import trio

from sigma.config.gateway import GatewayConfig

log = structlog.get_logger("sigma.gateway")

LISTEN_BACKLOG = 4096
ACCEPTS_PER_WAKE = 128
"""At most this many connections are accepted before the loop waits (and so yields) again."""
ACCEPT_RETRY_S = 0.1
ACCEPT_CAPACITY_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_SKIPPED_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)
"""What `accept` may report for one connection that failed before it was accepted (a reset,
a firewall's refusal): that connection is skipped, the listener goes on (as trio's does)."""


async def open_listeners(config: GatewayConfig) -> list[socket.socket]:
    """Listen on `host:port`; with `reuse_port`, on one SO_REUSEPORT socket per address.

    SO_REUSEPORT lets several processes listen on one port, and the kernel spreads new
    connections over them; each of them must set it (Linux refuses a second plain listener).
    The sockets are returned non-blocking, for `accept_forever`; the caller owns them.
    Raises `OSError` (its errno kept) naming the address that could not be listened on.
    """
    try:
        return await _bind(config)
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc


async def _bind(config: GatewayConfig) -> list[socket.socket]:
    if not config.reuse_port:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        return [_plain(listener.socket) for listener in listeners]
    addresses = await trio.socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, kind, protocol, _, address in addresses:
            sock = trio.socket.socket(family, kind, protocol)
            sockets.append(sock)  # closed below if anything fails, this one or a later one
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [_plain(sock) for sock in sockets]


def _plain(sock: trio.socket.SocketType) -> socket.socket:
    """The listening `sock` as a non-blocking `socket.socket`, which now owns its descriptor."""
    plain = socket.socket(fileno=sock.detach())
    plain.setblocking(False)
    return plain


async def accept_forever(
    listener: socket.socket,
    handler: Callable[[trio.SocketStream, str], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept connections and start `handler(stream, peer_ip)` for each in `nursery`, until
    cancelled.

    Unlike `trio.serve_listeners`, the stream is not closed when the handler returns: a
    WebSocket session outlives the handler that started it, and the handler closes what it
    keeps. The peer's address comes with the connection instead of costing a `getpeername`.
    Each wake-up accepts what waits, at most `ACCEPTS_PER_WAKE` connections (see the module
    docstring). A connection the peer gave up on before it was accepted is skipped; running out
    of file descriptors or memory pauses accepting instead of crashing.
    Resource handling: closes the listener on exit.
    """
    try:
        while True:
            await trio.lowlevel.wait_readable(listener)
            for _ in range(ACCEPTS_PER_WAKE):
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_SKIPPED_ERRORS:
                        continue
                    if exc.errno not in ACCEPT_CAPACITY_ERRORS:
                        raise
                    log.error("Cannot accept connections", error=os.strerror(exc.errno or 0))
                    await trio.sleep(ACCEPT_RETRY_S)
                    break
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                nursery.start_soon(handler, stream, peer_ip(address))
    finally:
        trio.lowlevel.notify_closing(listener)
        listener.close()


def peer_ip(address: object) -> str:
    """The IP address in a socket address (`"unknown"` for one without)."""
    return str(address[0]) if isinstance(address, tuple) and address else "unknown"
