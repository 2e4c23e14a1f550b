"""The dashboard's routes: `/`, `/static/...`, `/favicon.ico`, with types, caching and 404s."""

from __future__ import annotations

import pytest
import trio
from helpers import running_stack

from sigma.gateway.static_files import content_type_of


async def raw_request(port: int, target: str) -> bytes:
    """One request written by hand, so that no client library normalises the path."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
        )
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                received += chunk
    return received


async def test_the_page_and_its_assets_are_served_with_types_and_validators() -> None:
    async with running_stack() as stack:
        page = await stack.http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert 'data-testid="event-log"' in page.text
        for path, content_type in [
            ("/static/dashboard.js", "text/javascript; charset=utf-8"),
            ("/static/sigma-client.js", "text/javascript; charset=utf-8"),
            ("/static/dashboard.css", "text/css; charset=utf-8"),
            ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
            ("/static/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
            ("/favicon.ico", "image/svg+xml"),
        ]:
            asset = await stack.http.get(path)
            assert (asset.status_code, asset.headers["content-type"]) == (200, content_type), path
        etag = page.headers["etag"]
        again = await stack.http.get("/", headers={"if-none-match": etag})
        assert (again.status_code, again.content) == (304, b"")
        changed = await stack.http.get("/", headers={"if-none-match": '"other"'})
        assert changed.status_code == 200 and changed.content == page.content


@pytest.mark.parametrize(
    "target",
    [
        "/static/../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static//etc/passwd",
        "/static/..%2fstate.py",
        "/static/vendor/../../__init__.py",
        "/static/\\..\\__init__.py",
        "/static/",
        "/static/missing.js",
        "/index.html",
    ],
)
async def test_anything_else_is_404_and_nothing_outside_the_files_is_reachable(
    target: str,
) -> None:
    async with running_stack() as stack:
        response = await raw_request(stack.gateway.port, target)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), head
        assert b'"error":"not_found"' in body
        assert (await stack.http.get("/")).status_code == 200  # the gateway is undisturbed


async def test_only_get_is_served() -> None:
    async with running_stack() as stack:
        response = await stack.http.post("/static/dashboard.js", content=b"x")
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"


def test_content_types_follow_the_suffix() -> None:
    assert content_type_of("a/b.JS") == "text/javascript; charset=utf-8"
    assert content_type_of("vendor.v1/LICENSE") == "text/plain; charset=utf-8"
    assert content_type_of("x.svg") == "image/svg+xml"
