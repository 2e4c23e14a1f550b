"""Starting the gateway: `run_gateway`, and the `GatewayHandle` it tells its starter.

`run_gateway` opens the listeners (`sigma.gateway.listeners`) and hands every accepted
connection to one `sigma.gateway.server.Gateway`, which serves it; beside the accept loops it
runs the gateway's two sweeps, the keep-alive pings (`sigma.gateway.keepalive`) and the
timeout of kept-alive connections' request heads (`sigma.http.head_watch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import trio

from sigma.gateway.listeners import accept_forever, open_listeners
from sigma.gateway.server import Gateway

log = structlog.get_logger("sigma.gateway")


@dataclass(frozen=True)
class GatewayHandle:
    """What a started gateway tells its starter: where it listens."""

    host: str
    port: int
    tls: bool = False

    @property
    def ws_url(self) -> str:
        """The WebSocket URL clients connect to (`wss://` over TLS)."""
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP routes (`https://` over TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


async def run_gateway(
    gateway: Gateway, *, task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on `[gateway] host:port` of `gateway`'s config and let `gateway` serve every
    connection until cancelled.

    `started()` receives a `GatewayHandle` once the socket listens (port 0 picks a free port).
    Resource handling: closes its listeners on exit; sessions live under the gateway's
    `sessions` supervisor, not here.
    """
    config = gateway.config
    listeners = await open_listeners(config.gateway)
    port = listeners[0].getsockname()[1]
    handle = GatewayHandle(config.gateway.host, port, tls=gateway.tls is not None)
    log.info("Gateway listening", url=handle.ws_url)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_forever, listener, gateway.handle_connection, nursery)
        nursery.start_soon(gateway.keepalive.run)
        nursery.start_soon(gateway.head_watch.run)
        task_status.started(handle)
