"""Authentication at the edge: JWT verification for the WebSocket handshake and token refresh.

`Authenticator` is a plain synchronous class built once from `[auth]`: it finds the token in a
request (`Authorization: Bearer`, else `?token=`), verifies it with the one pinned algorithm
and key, and turns its claims into `Claims` (subject, expiry, the event types it may receive).
A token it refuses raises `TokenRejected`, whose `error` and `detail` become the HTTP 401 body
or the `invalid_token` error reply to a refresh. Nothing here does I/O, so verification costs
are bounded and tests need no trio.

Algorithms are pinned by configuration, never taken from the token: `alg: none` and HS/RS key
confusion (an HS256 token "signed" with the RSA public key) fail like any wrong signature.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt

from sigma.errors import RemoteError
from sigma.keys import load_public_key

if TYPE_CHECKING:
    from sigma.config.gateway import AuthConfig

MAX_TOKEN_CHARS = 8 * 1024
"""Longer tokens are refused unread: verification cost must stay bounded for hostile input."""


class TokenRejected(RemoteError):
    """The client presented no token, or one we must refuse. The client's fault.

    `error` is a short machine code (`missing_token`, `invalid_token`, `token_expired`,
    `token_not_yet_valid`); `detail` says why in words that are safe to show the client.
    """

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class Claims:
    """What a verified token grants: who, until when (Unix seconds), and which event types."""

    subject: str | None
    expires_at: float
    allowed: frozenset[str]

    def remaining_s(self, leeway_s: float, now: float | None = None) -> float:
        """Seconds until the token stops being valid (after `leeway_s`), never below zero."""
        now = time.time() if now is None else now
        return max(0.0, self.expires_at + leeway_s - now)


class Authenticator:
    """Verifies JWTs against one pinned algorithm and key, with the configured checks.

    `event_types` is the universe a `types` claim is filtered against (unknown names are
    ignored); a token without the claim may receive all of them.
    """

    def __init__(self, config: AuthConfig, event_types: frozenset[str]) -> None:
        self.algorithm = config.algorithm
        self.issuer = config.issuer
        self.audience = config.audience
        self.leeway_s = config.leeway_s
        self.types_claim = config.types_claim
        self.event_types = event_types
        self._key: Any
        if config.algorithm.startswith("HS"):
            self._key = config.jwt_secret
        else:
            assert config.public_key_file is not None  # guaranteed by AuthConfig's validator
            self._key = load_public_key(config.public_key_file, config.algorithm)

    def token_of(self, authorization: str | None, query_token: str | None) -> str:
        """The token a handshake presents: `Authorization: Bearer`, else `?token=`."""
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRejected(
                    "invalid_token", "the Authorization header must be 'Bearer <token>'"
                )
            return token.strip()
        if query_token:
            return query_token
        raise TokenRejected(
            "missing_token", "send 'Authorization: Bearer <token>' or ?token=<token>"
        )

    def verify(self, token: str) -> Claims:
        """Verify `token` and return its claims, or raise `TokenRejected` saying why."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("invalid_token", f"token is longer than {MAX_TOKEN_CHARS} chars")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={
                    "require": ["exp"],
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token_expired", "the token has expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("token_not_yet_valid", "the token is not valid yet (nbf)") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected("invalid_token", _describe(exc)) from None
        return Claims(
            subject=_subject_of(payload),
            expires_at=_expiry_of(payload),
            allowed=self._allowed_by(payload),
        )

    def _allowed_by(self, payload: dict[str, Any]) -> frozenset[str]:
        if self.types_claim not in payload:
            return self.event_types
        claimed = payload[self.types_claim]
        names: Iterable[object]
        if isinstance(claimed, str):
            names = claimed.split()  # the space-separated form OAuth uses for `scope`
        elif isinstance(claimed, list):
            names = claimed
        else:
            raise TokenRejected(
                "invalid_token", f"claim {self.types_claim!r} must be a list of event types"
            )
        return frozenset(name for name in names if isinstance(name, str)) & self.event_types


def _expiry_of(payload: dict[str, Any]) -> float:
    """`exp` as Unix seconds; PyJWT checked it is a number in the future, not that it is sane."""
    expires_at = float(payload["exp"])
    try:
        datetime.fromtimestamp(expires_at, UTC)
    except (OverflowError, ValueError, OSError):
        raise TokenRejected("invalid_token", "claim 'exp' is out of range") from None
    return expires_at


def _subject_of(payload: dict[str, Any]) -> str | None:
    subject = payload.get("sub")
    if subject is None:
        return None
    if not isinstance(subject, str):
        raise TokenRejected("invalid_token", "claim 'sub' must be a string")
    return subject


def _describe(exc: jwt.InvalidTokenError) -> str:
    """Say why a token failed, in words that reveal nothing about our keys."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is not meant for this server (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token was not issued by the expected issuer (iss)"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token is not signed with the algorithm this server accepts"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(exc, jwt.DecodeError):
        return "the token is not a well-formed JWT"
    return "the token's claims are invalid"


@dataclass(frozen=True)
class SessionAuth:
    """The verified token a session runs under, and what checks a refreshed one."""

    authenticator: Authenticator
    claims: Claims

    def remaining_s(self) -> float:
        """Wall-clock seconds until the current token stops being valid (leeway included)."""
        return self.claims.remaining_s(self.authenticator.leeway_s)
