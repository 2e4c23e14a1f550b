"""`[gateway] reuse_port`: several gateways on one port (SO_REUSEPORT), and what `/health` says
of the node, its broker and its poller in one process."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from helpers import free_port, make_config, running_stack
from trio_websocket import open_websocket_url

from sigma.broker.node import node_id_of
from sigma.config import BrokerConfig, GatewayConfig
from sigma.gateway.listeners import open_listeners


async def test_two_gateways_with_reuse_port_share_one_port_and_both_serve() -> None:
    port = free_port()
    config = make_config(gateway=GatewayConfig(port=port, reuse_port=True))
    async with running_stack(config) as first, running_stack(config) as second:
        assert first.gateway.port == second.gateway.port == port
        seen = set()
        with trio.fail_after(10):
            while len(seen) < 2:
                async with open_websocket_url(first.ws_url):
                    await trio.testing.wait_all_tasks_blocked()
                    seen |= {
                        name
                        for name, stack in (("first", first), ("second", second))
                        if stack.sessions.child_count()
                    }
        assert seen == {"first", "second"}


async def test_without_reuse_port_a_second_listener_on_the_port_is_refused() -> None:
    port = free_port()
    listeners = await open_listeners(GatewayConfig(port=port))
    try:
        with pytest.raises(OSError) as refused:
            await open_listeners(GatewayConfig(port=port, reuse_port=True))
        assert refused.value.errno == errno.EADDRINUSE
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in str(refused.value)
    finally:
        for listener in listeners:
            listener.close()


async def test_health_of_one_process_names_its_node_broker_and_poller() -> None:
    async with running_stack() as stack, httpx.AsyncClient(base_url=stack.gateway.http_url) as http:
        body = (await http.get("/health")).json()
    assert body["broker"] == {"kind": "memory", "connected": True, "held_back": False}
    assert body["poller"] == "leader" and body["status"] == "healthy"
    assert "node" in body


def test_a_node_is_named_by_the_config_or_else_by_host_and_process() -> None:
    assert node_id_of(BrokerConfig(node_id="edge-1")) == "edge-1"
    assert node_id_of(BrokerConfig()) == f"{socket.gethostname()}-{os.getpid()}"


def test_serve_on_a_port_in_use_says_which_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = tmp_path / "sigma.toml"
        path.write_text(
            f'[gateway]\nport = {port}\n[engine]\nembedded = false\nurl = "http://127.0.0.1:9/rpc"\n'
        )
        served = subprocess.run(
            [sys.executable, "-m", "sigma", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert served.returncode == 1
    assert (
        "the supervision tree could not keep running: supervisor 'root': child 'gateway' failed "
        f"to start: OSError: [Errno 98] cannot listen on 127.0.0.1:{port}: Address already in use"
    ) in served.stderr + served.stdout
