"""Key and certificate files read from the configuration, each checked with a one-line reason.

A leaf: `sigma.config` validates with it at load time, the gateway uses what it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
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
