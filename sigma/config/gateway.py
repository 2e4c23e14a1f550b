"""The gateway port's sections: `[gateway]`, `[auth]`, `[api]`, `[limits]`, and `is_loopback()`."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sigma.config.redaction import SECRET_FIELD
from sigma.config.section import Port, PositiveSeconds, Section
from sigma.keys import check_certificate_file, load_public_key, load_server_tls

JWT_SECRET_ENV_VAR = "SIGMA_JWT_SECRET"
MIN_HS256_SECRET_BYTES = 32


class GatewayConfig(Section):
    """`[gateway]`: the listening socket for WebSocket clients and HTTP routes.

    With `tls_cert_file` and `tls_key_file` (PEM; both or neither) the port speaks TLS only:
    `wss://` and `https://`. Both files are read and matched at load time, so a wrong path or a
    key of another certificate stops `sigma serve` before it listens. Relative paths are taken
    from the working directory, as every path in this file is.
    """

    host: str = "127.0.0.1"
    port: Port = 12080
    handshake_timeout_s: PositiveSeconds = 10.0
    drain_timeout_s: PositiveSeconds = 5.0
    max_frame_bytes: int = Field(default=64 * 1024, ge=125)
    max_connections: int = Field(default=20_000, ge=1)
    max_connections_per_ip: int = Field(default=20_000, ge=1)
    max_http_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    reuse_port: bool = False
    """True: listen with SO_REUSEPORT, so several `sigma serve` processes share one port."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = Field(default=None, validate_default=True)

    @property
    def tls(self) -> bool:
        """Whether the port speaks TLS (`wss://`, `https://`)."""
        return self.tls_cert_file is not None

    @field_validator("tls_cert_file")
    @classmethod
    def _certificate_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            check_certificate_file(path)
        return path

    @field_validator("tls_key_file")
    @classmethod
    def _key_matches_certificate(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert_file" not in info.data:
            return path  # the certificate is refused already; that error is the one to show
        cert = info.data["tls_cert_file"]
        if cert is None and path is None:
            return None
        if cert is None:
            raise ValueError("needs tls_cert_file too (give both, or neither)")
        if path is None:
            raise ValueError("required when tls_cert_file is set (give both, or neither)")
        load_server_tls(cert, path)
        return path


class AuthConfig(Section):
    """`[auth]`: who may connect, and with which token.

    With `mode = "jwt"` every WebSocket handshake needs a token signed with the one pinned
    `algorithm`: HS256 with `jwt_secret` (`$SIGMA_JWT_SECRET` overrides it), or RS256/ES256 with
    the public key in `public_key_file`. `exp` is required; `iss` and `aud` are checked when set.
    """

    mode: Literal["none", "jwt"] = "none"
    algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret: str = Field(default="", repr=False, json_schema_extra=SECRET_FIELD)
    public_key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = Field(default=5.0, ge=0.0, le=300.0)
    types_claim: str = Field(default="types", min_length=1)
    allow_insecure: bool = False
    allowed_origins: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _secret_from_environment(cls, data: Any) -> Any:
        from_env = os.environ.get(JWT_SECRET_ENV_VAR)
        if from_env and isinstance(data, Mapping):
            return {**data, "jwt_secret": from_env}
        return data

    @model_validator(mode="after")
    def _jwt_needs_a_key(self) -> Self:
        if self.mode != "jwt":
            return self
        if self.algorithm == "HS256":
            if not self.jwt_secret:
                raise ValueError(
                    f'mode = "jwt" with HS256 needs jwt_secret (or ${JWT_SECRET_ENV_VAR})'
                )
            if len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise ValueError(
                    f"jwt_secret must be at least {MIN_HS256_SECRET_BYTES} bytes for HS256 "
                    "(RFC 7518, section 3.2)"
                )
            return self
        if self.public_key_file is None:
            raise ValueError(f'mode = "jwt" with {self.algorithm} needs public_key_file')
        try:
            load_public_key(self.public_key_file, self.algorithm)
        except ValueError as exc:
            raise ValueError(f"public_key_file: {exc}") from None
        return self


class ApiConfig(Section):
    """`[api]`: the publish endpoint; an empty key turns it off.

    `publish_wait_s`: how long a publish waits for the hub to take new events (while most
    clients lag, a full client is on probation, or the hub's inbox is full) before it is
    answered 503 `overloaded`. Its default is longer than `[hub] slow_client_grace_s`, so that
    one client stalling among many costs publishers a wait, not a refusal.
    """

    key: str = Field(default="", repr=False, json_schema_extra=SECRET_FIELD)
    publish_wait_s: float = Field(default=2.0, ge=0.0, le=60.0)


class LimitsConfig(Section):
    """`[limits]`: what one client may send.

    Client frames are metered by a token bucket (`messages_per_s`, `burst`; 0 turns it off).
    Frames beyond it are dropped with a `rate_limited` error reply (at most one a second); a
    client that keeps going past `abuse_excess_frames` dropped frames within `abuse_window_s`
    is closed with 4029.
    """

    messages_per_s: float = Field(default=50.0, ge=0.0)
    burst: int = Field(default=100, ge=1)
    abuse_excess_frames: int = Field(default=200, ge=1)
    abuse_window_s: PositiveSeconds = 10.0


def is_loopback(host: str) -> bool:
    """True when `host` names only this machine: 127.0.0.0/8, ::1 or `localhost`."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
