"""A wheel built from the repository, installed (not editable) into a fresh venv, serves the page
and its assets: the dashboard's files are package data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # building a wheel and a venv takes 10-25 s
def test_an_installed_wheel_serves_the_page_and_its_assets(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("sigma_gateway-*.whl")
    venv = tmp_path / "venv"
    # the dependencies come from this venv (on PYTHONPATH, whose editable sigma is a .pth
    # finder that PYTHONPATH does not run); sigma itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {**os.environ, "PYTHONPATH": site, "PYTHONNOUSERSITE": "1"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=env,
    )
    where = subprocess.run(
        [str(python), "-c", "import sigma, sys; print(sigma.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the repository
    port = free_port()
    config = tmp_path / "sigma.toml"
    config.write_text(
        f'[gateway]\nport = {port}\n[engine]\nport = 0\ndata_dir = "{tmp_path / "data"}"\n'
    )
    server = subprocess.Popen(
        [str(venv / "bin" / "sigma"), "serve", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(base + "/", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, "sigma serve exited"
                assert time.monotonic() < deadline, "sigma serve did not listen in 30 s"
                time.sleep(0.2)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "/static/dashboard.js" in page.text
        for path, content_type in [
            ("/static/dashboard.js", "text/javascript; charset=utf-8"),
            ("/static/sigma-client.js", "text/javascript; charset=utf-8"),
            ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
            ("/static/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
            ("/favicon.ico", "image/svg+xml"),
        ]:
            asset = httpx.get(base + path, timeout=2)
            assert (asset.status_code, asset.headers["content-type"]) == (200, content_type)
            assert len(asset.content) > 100
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
