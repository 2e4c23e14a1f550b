"""The TLS trust of Sigma's client tools: the system's CAs, or one private CA (`--cafile`).

`sigma check`, `sigma watch` (`wss://`) and `sigma fault` (`https://`) verify the gateway's
certificate and host name either way; `--cafile` replaces the system's CAs with the
certificate(s) in one PEM file, as `curl --cacert` does.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

TLS_SCHEMES = frozenset({"wss", "https"})


def tls_context(url: str, cafile: str | None) -> ssl.SSLContext | None:
    """The TLS context to reach `url` with: None (the system's trusted CAs, or no TLS for
    `ws://` and `http://`), or one that trusts only the CA certificate(s) in `cafile`.

    Raises `ValueError` with a one-line reason when `cafile` cannot be read, holds no
    certificate, or is given for a URL without TLS.
    """
    if cafile is None:
        return None
    scheme = urlsplit(url).scheme
    if scheme not in TLS_SCHEMES:
        raise ValueError(
            f"--cafile is for {'wss' if scheme == 'ws' else 'https'}:// URLs, not {url!r}"
        )
    try:
        return ssl.create_default_context(cafile=cafile)
    except FileNotFoundError:
        raise ValueError(f"--cafile {cafile}: file not found") from None
    except OSError as exc:  # ssl.SSLError included: no certificate in it
        reason = exc.strerror or (exc.reason if isinstance(exc, ssl.SSLError) else None) or exc
        raise ValueError(f"--cafile {cafile}: no CA certificate can be read ({reason})") from None
