"""The checks a WebSocket upgrade request must pass before anything is upgraded.

Plain synchronous functions over a parsed `HttpRequest`: each either returns what the gateway
needs next or raises `HttpError` with the status and JSON body the client sees. The gateway runs
them in order (`sigma.gateway.server.Gateway._upgrade`): a well-formed handshake (400/426), an
allowed `Origin` (403), a valid token (401). Refusals are the client's fault and are logged
without the token.
"""

from __future__ import annotations

import base64
import binascii

import structlog

from sigma.gateway.auth import Authenticator, SessionAuth, TokenRejected
from sigma.http.request import HttpError, HttpRequest

log = structlog.get_logger("sigma.gateway")

WEBSOCKET_VERSION = "13"
WEBSOCKET_KEY_BYTES = 16


def check_websocket_handshake(request: HttpRequest) -> None:
    """Refuse an upgrade request that no WebSocket handshake could complete (RFC 6455 4.2.1)."""
    if request.header("sec-websocket-version") != WEBSOCKET_VERSION:
        raise HttpError(
            426,
            "unsupported_websocket_version",
            f"this server speaks WebSocket version {WEBSOCKET_VERSION}",
            headers=(("sec-websocket-version", WEBSOCKET_VERSION),),
        )
    connection = (request.header("connection") or "").lower()
    if "upgrade" not in (token.strip() for token in connection.split(",")):
        raise HttpError(400, "bad_handshake", "the Connection header must include 'Upgrade'")
    key = request.header("sec-websocket-key") or ""
    try:
        key_ok = len(base64.b64decode(key, validate=True)) == WEBSOCKET_KEY_BYTES
    except (binascii.Error, ValueError):
        key_ok = False
    if not key_ok:
        raise HttpError(400, "bad_handshake", "Sec-WebSocket-Key must be 16 bytes in base64")
    # Refused from its head, so that accepting it never waits for a body to arrive.
    if request.header("transfer-encoding") is not None or request.header("content-length") not in (
        None,
        "0",
    ):
        raise HttpError(400, "bad_request", "an upgrade request has no body")


def check_origin(request: HttpRequest, allowed_origins: tuple[str, ...]) -> None:
    """Refuse (403) an `Origin` outside `allowed_origins`; an empty tuple allows any."""
    if allowed_origins and request.header("origin") not in allowed_origins:
        raise HttpError(403, "forbidden_origin", "this Origin may not connect")


def authenticate(
    authenticator: Authenticator | None, request: HttpRequest, peer: str
) -> SessionAuth | None:
    """The verified token of an upgrade request; None when authentication is off.

    Raises `HttpError(401)` with `{"error", "detail"}` and a `WWW-Authenticate` header when the
    token is missing or refused.
    """
    if authenticator is None:
        return None
    try:
        token = authenticator.token_of(
            request.header("authorization"), request.query_value("token")
        )
        claims = authenticator.verify(token)
    except TokenRejected as rejected:
        log.info("Handshake refused", peer=peer, error=rejected.error, detail=rejected.detail)
        raise HttpError(
            401,
            rejected.error,
            rejected.detail,
            headers=(("www-authenticate", f'Bearer error="{_bearer_error(rejected)}"'),),
        ) from None
    return SessionAuth(authenticator, claims)


def _bearer_error(rejected: TokenRejected) -> str:
    """The RFC 6750 `error` attribute of `WWW-Authenticate` for a refused token."""
    return "invalid_request" if rejected.error == "missing_token" else "invalid_token"
