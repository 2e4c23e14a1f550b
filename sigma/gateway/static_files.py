"""The dashboard's files: `GET /` (the page), `GET /static/<name>` and `GET /favicon.ico`.

The files are package data of `sigma.dashboard` (`static/`), so an installed wheel serves them
too. They are read once, when the gateway starts, into a table of name -> bytes: a request can
only name a file of that table, so no path (`..`, `%2e%2e`, `//`, backslashes, absolute paths)
ever reaches the file system, and anything else answers 404.

Caching: each response carries a strong `ETag` (a hash of the bytes) and
`Cache-Control: no-cache`, so a browser keeps its copy and revalidates it with
`If-None-Match` (answered `304`, no body): cheap, and never stale after an upgrade.
`X-Content-Type-Options: nosniff` keeps browsers to the declared `Content-Type`. The page
also gets a `Content-Security-Policy` that lets it load and connect to its own origin only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from sigma.http.connection import HttpServerConnection
from sigma.http.request import HttpError, HttpRequest

STATIC_PREFIX = "/static/"
PAGE_PATH = "/"
FAVICON_PATH = "/favicon.ico"
PAGE_FILE = "index.html"
FAVICON_FILE = "favicon.svg"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
}
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
TEXT = "text/plain; charset=utf-8"
"""For files without a known suffix (a vendored LICENSE, VERSION)."""


@dataclass(frozen=True)
class StaticFile:
    """One file ready to send: its bytes, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def content_type_of(name: str) -> str:
    """The `Content-Type` for a file name, by its suffix."""
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > name.rfind("/") else ""
    return CONTENT_TYPES.get(suffix, TEXT)


def load_static_files(root: Traversable | None = None) -> dict[str, StaticFile]:
    """Every file under `root` (the package's `static/` by default), by its relative name."""
    base = root if root is not None else resources.files("sigma.dashboard") / "static"
    files: dict[str, StaticFile] = {}
    pending: list[tuple[str, Traversable]] = [("", base)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            if entry.is_dir():
                pending.append((f"{name}/", entry))
            else:
                body = entry.read_bytes()
                etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
                files[name] = StaticFile(body, content_type_of(name), etag)
    return files


class StaticFiles:
    """Answers the dashboard's routes from the table `load_static_files` builds."""

    def __init__(self, files: dict[str, StaticFile] | None = None) -> None:
        self.files = files if files is not None else load_static_files()

    @staticmethod
    def handles(path: str) -> bool:
        """True for the paths this module answers (others are the gateway's)."""
        return path in (PAGE_PATH, FAVICON_PATH) or path.startswith(STATIC_PREFIX)

    def lookup(self, path: str) -> StaticFile:
        """The file `path` names, or `HttpError` 404."""
        if path == PAGE_PATH:
            name = PAGE_FILE
        elif path == FAVICON_PATH:
            name = FAVICON_FILE
        else:
            name = path.removeprefix(STATIC_PREFIX)
        found = self.files.get(name)
        if found is None:
            raise HttpError(404, "not_found", f"no file at {path[:200]}")
        return found

    async def answer(self, conn: HttpServerConnection, request: HttpRequest) -> None:
        """Send the file `request` names: 200, 304 when the client's copy is current, or 404.

        Only GET is served (405 otherwise); the request must be fully read by the caller.
        """
        if request.method != "GET":
            raise HttpError(405, "method_not_allowed", f"{request.path[:200]} accepts GET")
        found = self.lookup(request.path)
        headers: tuple[tuple[str, str], ...] = (
            ("etag", found.etag),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
        )
        if request.path == PAGE_PATH:
            headers += (
                ("content-security-policy", PAGE_POLICY),
                ("referrer-policy", "no-referrer"),
            )
        if _matches(request.header("if-none-match"), found.etag):
            await conn.respond(304, b"", content_type=found.content_type, headers=headers)
            return
        await conn.respond(200, found.body, content_type=found.content_type, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
