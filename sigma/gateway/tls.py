"""The TLS handshake of each accepted connection, with `[gateway] tls_cert_file` and `tls_key_file`.

Every accepted connection is first wrapped in a server-side `trio.SSLStream`, and nothing but TLS
is spoken on the port (`https://`, `wss://`). The TLS handshake has `handshake_timeout_s`, as the
request head after it has; a client that fails it (does not trust the certificate, speaks plain
HTTP, stalls) is logged at debug and dropped, and nobody else notices. `https_compatible=True`:
like browsers and HTTP servers, neither side waits for the other's `close_notify` at the end.
Over TLS the hub's direct write to an idle client's socket is off (it needs the bare socket, and
a record must go through the `SSLStream`): the session's sender writes every frame, awaited.
"""

from __future__ import annotations

import ssl

import structlog
import trio

log = structlog.get_logger("sigma.gateway")


async def secure(
    stream: trio.SocketStream, context: ssl.SSLContext, peer: str, handshake_timeout_s: float
) -> trio.SSLStream[trio.SocketStream] | None:
    """The TLS handshake, within `handshake_timeout_s`; None (stream closed) when it failed."""
    secured = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    failure = "timed out"
    with trio.move_on_after(handshake_timeout_s):
        try:
            await secured.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            failure = str(exc.__cause__ or exc) or type(exc).__name__
        except Exception:
            log.exception("TLS handshake failed unexpectedly", peer=peer)
            failure = "internal error"
        else:
            return secured
    log.debug("TLS handshake failed", peer=peer, error=failure)
    await trio.aclose_forcefully(stream)
    return None
