"""`accept_forever`: every waiting connection is taken with its peer's address, however many
wait at once; running out of file descriptors pauses accepting instead of ending it; and the
listener is closed when the loop is cancelled."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator

import trio
import trio.testing

from sigma.config import GatewayConfig
from sigma.gateway.listeners import ACCEPT_RETRY_S, ACCEPTS_PER_WAKE, accept_forever, open_listeners


class Accepted:
    """A handler that records each connection's peer and closes its stream."""

    def __init__(self) -> None:
        self.peers: list[str] = []
        self.changed = trio.Event()

    async def __call__(self, stream: trio.SocketStream, peer: str) -> None:
        self.peers.append(peer)
        self.changed.set()
        await stream.aclose()

    async def wait_for(self, count: int) -> None:
        while len(self.peers) < count:
            self.changed = trio.Event()
            await self.changed.wait()


async def _listener() -> socket.socket:
    (listener,) = await open_listeners(GatewayConfig(host="127.0.0.1", port=0))
    return listener


def _connect(port: int, count: int) -> list[socket.socket]:
    """`count` connections the kernel completes into the listen backlog, none accepted yet."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


async def test_more_connections_than_one_wake_takes_are_all_accepted_with_their_address() -> None:
    listener = await _listener()
    port = listener.getsockname()[1]
    clients = _connect(port, 2 * ACCEPTS_PER_WAKE + 5)
    accepted = Accepted()
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_forever, listener, accepted, nursery)
                await accepted.wait_for(len(clients))
                nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
    assert accepted.peers == ["127.0.0.1"] * len(clients)
    assert listener.fileno() == -1  # closed by the cancelled loop


@contextlib.contextmanager
def _descriptors_exhausted() -> Iterator[None]:
    """Fill every file descriptor the process may open (under a lowered soft limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_accepting_pauses_then_resumes(autojump_clock: object) -> None:
    listener = await _listener()
    clients = _connect(listener.getsockname()[1], 3)
    accepted = Accepted()
    try:
        async with trio.open_nursery() as nursery:
            with _descriptors_exhausted():
                nursery.start_soon(accept_forever, listener, accepted, nursery)
                # Each try meets EMFILE and waits ACCEPT_RETRY_S (virtual time) before the next.
                await trio.sleep(ACCEPT_RETRY_S * 3.5)
                assert accepted.peers == []
                assert listener.fileno() != -1  # still listening
            with trio.fail_after(ACCEPT_RETRY_S * 2):
                await accepted.wait_for(len(clients))
            nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
    assert accepted.peers == ["127.0.0.1"] * 3
