"""`run_process`: a port taken between being picked and being bound costs a restart only."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

import sigma.testing.process as process_module
from sigma.testing.process import run_process


def _taken_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


async def test_a_port_taken_before_the_server_binds_it_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _taken_port() as holder:
        taken = holder.getsockname()[1]
        picks = iter([taken])
        real_free_port = process_module.free_port
        monkeypatch.setattr(
            process_module, "free_port", lambda: next(picks, None) or real_free_port()
        )
        async with run_process(tmp_path) as server:
            assert server.port != taken
            async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
                assert (await http.get("/health")).status_code == 200
