"""Key and certificate files read from the configuration, each checked with a one-line reason.

A leaf: `sigma.config` validates with it at load time, the gateway uses what it returns.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import get_default_algorithms


def load_public_key(path: Path, algorithm: str) -> Any:
    """Read a PEM public key for `algorithm` (RS256: RSA, ES256: EC) from `path`.

    Raises `ValueError` with a one-line reason: unreadable, not such a key, or a private key
    (the gateway only verifies and must never hold a signing key).
    """
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = "an RSA" if algorithm.startswith("RS") else "an EC"
    try:
        key = get_default_algorithms()[algorithm].prepare_key(pem)
    except (jwt.InvalidKeyError, TypeError, ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not {kind} public key in PEM form") from None
    if isinstance(key, RSAPrivateKey | EllipticCurvePrivateKey):
        raise ValueError(f"{path} holds a private key; give the gateway the public key only")
    return key


def load_server_tls(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side TLS context holding the PEM certificate chain and private key given.

    `cert_file` holds the server's certificate, optionally followed by its intermediates;
    `key_file` its private key, unencrypted (a server restarted unattended has nobody to type
    a passphrase). The context is Python's default for serving clients
    (`ssl.Purpose.CLIENT_AUTH`: TLS 1.2 or later, the library's default ciphers), offers
    HTTP/1.1 by ALPN and asks no certificate of clients.
    Raises `ValueError` with a one-line reason naming the file at fault: unreadable, not a PEM
    certificate or key, an encrypted key, or a key that does not belong to the certificate.
    """
    check_certificate_file(cert_file)
    key_pem = _read(key_file)
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValueError(f"{key_file} is encrypted; give the gateway an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{key_file} holds no PEM private key") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])  # the one protocol served, WebSocket upgrades too
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"{key_file} is not the private key of the certificate in {cert_file}"
            ) from None
        raise ValueError(f"cannot use {cert_file} with {key_file}: {exc.reason or exc}") from None
    return context


def check_certificate_file(path: Path) -> None:
    """Check that `path` is readable and holds at least one PEM certificate.

    Raises `ValueError` with a one-line reason.
    """
    pem = _read(path)
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None


def _read(path: Path) -> bytes:
    """The bytes of `path`, or `ValueError("cannot read PATH: reason")`."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
