"""The configuration: pydantic models of `supervisor.toml`, and `load_config()`.

Every model is frozen and forbids unknown keys, so a typo is an error that names the key. Times are
in seconds (`*_s`), sizes say their unit in the name. The models' defaults are the embedded
configuration that `sigma serve` runs with when no file is given; the repository's
`supervisor.toml` spells the same values out.

Which file is read: `--config FILE`, else `$SIGMA_CONFIG`, else `./supervisor.toml` when it
exists, else the embedded defaults.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from sigma.errors import ConfigError, dotted_location, first_error
from sigma.faults import FaultSpec
from sigma.keys import check_certificate_file, load_public_key, load_server_tls

CONFIG_ENV_VAR = "SIGMA_CONFIG"
DEFAULT_CONFIG_NAME = "supervisor.toml"
JWT_SECRET_ENV_VAR = "SIGMA_JWT_SECRET"
MIN_HS256_SECRET_BYTES = 32
REDACTED = "***"
SECRET_FIELD: JsonDict = {"secret": True}
"""`json_schema_extra` of a field whose value must never be shown (logs, `config check`)."""

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """Base of every configuration section: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")


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


class EngineConfig(Section):
    """`[engine]`: the JSON-RPC engine, embedded in `sigma serve` or reached at `url`."""

    embedded: bool = True
    host: str = "127.0.0.1"
    port: Port = 8002
    url: str | None = None
    data_dir: Path = Path("./sigma-data")
    storage_paths: tuple[Path, ...] = ()
    workers: int = Field(default=2, ge=1, le=64)
    max_jobs_retained: int = Field(default=1000, ge=1)

    @property
    def rpc_url(self) -> str:
        """The URL the poller calls: `url` when set, else the embedded engine's address."""
        return self.url or f"http://{self.host}:{self.port}/rpc"

    @model_validator(mode="after")
    def _external_engine_needs_url(self) -> Self:
        if not self.embedded and self.url is None:
            raise ValueError("url is required when embedded = false")
        return self


def _default_intervals() -> dict[str, float]:
    return {
        "system.status": 5.0,
        "storage.status": 10.0,
        "agents.list": 5.0,
        "compression.jobs.list": 2.0,
    }


class PollerConfig(Section):
    """`[poller]`: which engine methods are polled, how often, and for how long to wait."""

    timeout_s: PositiveSeconds = 2.0
    intervals_s: dict[str, PositiveSeconds] = Field(default_factory=_default_intervals)
    retry_min_s: PositiveSeconds = 0.5
    retry_max_s: PositiveSeconds = 10.0

    @model_validator(mode="after")
    def _retry_max_not_below_min(self) -> Self:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(
                f"retry_max_s must be >= retry_min_s (got {self.retry_max_s} < {self.retry_min_s})"
            )
        return self


class HeartbeatConfig(Section):
    """`[heartbeat]`: heartbeat events through the hub, and WebSocket pings to each client."""

    interval_s: PositiveSeconds = 15.0
    ping_interval_s: PositiveSeconds = 20.0
    ping_timeout_s: PositiveSeconds = 10.0


class HubConfig(Section):
    """`[hub]`: per-client queues, the slow-client policy and the resume history.

    `slow_client_grace_s`: how long a client whose queue is full is kept on probation (the hub
    taking no new events meanwhile) before it may be cut off for lagging far behind the rest.
    """

    queue_size: int = Field(default=256, ge=1)
    slow_client_policy: Literal["disconnect", "drop_oldest", "conflate"] = "disconnect"
    slow_client_grace_s: float = Field(default=1.0, gt=0.0, le=60.0)
    history_size: int = Field(default=1024, ge=0)
    inbox_size: int = Field(default=1024, ge=1)
    max_subscriptions: int = Field(default=64, ge=1)


REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


class BrokerConfig(Section):
    """`[broker]`: who numbers events and elects the poller.

    `kind = "memory"`: this process alone (the hub numbers events itself). `kind = "redis"`:
    every node sharing `url` and `stream` is one gateway; events are numbered in Redis and read
    back by every node, and one node at a time holds the poller lease for `lease_s`.
    `node_id` names this node in `/health` and heartbeats (empty: `<hostname>-<pid>`).
    `publish_timeout_s` bounds how long a publish waits for Redis before it is refused;
    `idempotency_s` is how long an `Idempotency-Key` is remembered.
    """

    kind: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = Field(default="sigma", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    lease_s: float = Field(default=5.0, ge=0.3, le=300.0)
    node_id: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")
    publish_timeout_s: PositiveSeconds = 5.0
    idempotency_s: float = Field(default=3600.0, ge=1.0)

    @model_validator(mode="after")
    def _url_names_redis(self) -> Self:
        parsed = urlsplit(self.url)
        if parsed.scheme not in REDIS_URL_SCHEMES:
            raise ValueError(
                f"url must start with redis://, rediss:// or unix:// (got {self.url!r})"
            )
        if parsed.scheme != "unix" and not parsed.hostname:
            raise ValueError(f"url needs a host, as in redis://host:6379/0 (got {self.url!r})")
        try:
            parsed.port  # noqa: B018 (raises on a port out of range)
        except ValueError:
            raise ValueError(f"url has an invalid port (got {self.url!r})") from None
        return self


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


class BackoffConfig(Section):
    """`[supervisor.backoff]`: the delay before each restart, exponential with jitter."""

    min_s: PositiveSeconds = 0.1
    max_s: PositiveSeconds = 5.0
    factor: float = Field(default=0.2, ge=0.0, le=1.0)
    reset_after_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Self:
        if self.max_s < self.min_s:
            raise ValueError(f"max_s must be >= min_s (got max_s={self.max_s}, min_s={self.min_s})")
        return self


class SupervisorConfig(Section):
    """`[supervisor]`: the root supervisor's strategy, restart intensity, watchdog and backoff.

    `watchdog_min_s` is the least time a looping actor may stay busy and silent before it is
    taken for hung (the deadline is three of its natural periods, never less than this).
    """

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    max_restarts: int = Field(default=5, ge=0)
    max_seconds: PositiveSeconds = 10.0
    shutdown_timeout_s: PositiveSeconds = 5.0
    watchdog_min_s: PositiveSeconds = 10.0
    backoff: BackoffConfig = BackoffConfig()


class FaultsConfig(Section):
    """`[faults]`: fault injection (`sigma.faults`), for tests, soak runs and game days.

    `points` (`[[faults.points]]` tables, each a `FaultSpec`) are armed when the tree starts.
    `admin = true` turns on `/admin/faults` on the gateway port, which answers loopback peers only;
    off, the route does not exist (404).
    """

    admin: bool = False
    points: tuple[FaultSpec, ...] = ()


class LoggingConfig(Section):
    """`[logging]`: level and format; `--log-level` and `--log-format` override them."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Config(Section):
    """The whole configuration, one object passed down to every part."""

    gateway: GatewayConfig = GatewayConfig()
    engine: EngineConfig = EngineConfig()
    poller: PollerConfig = PollerConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    hub: HubConfig = HubConfig()
    broker: BrokerConfig = BrokerConfig()
    auth: AuthConfig = AuthConfig()
    api: ApiConfig = ApiConfig()
    limits: LimitsConfig = LimitsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    faults: FaultsConfig = FaultsConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _refuse_open_unauthenticated_listener(self) -> Self:
        auth = self.auth
        if auth.mode == "none" and not auth.allow_insecure and not is_loopback(self.gateway.host):
            raise ValueError(
                f"gateway.host: refusing to listen on {self.gateway.host or '(all addresses)'} "
                'without authentication; set [auth] mode = "jwt" or [auth] allow_insecure = true'
            )
        return self

    def redacted_dump(self) -> dict[str, Any]:
        """The effective configuration as JSON-ready data, with every set secret shown as "***".

        For `sigma config check` and anything else that prints or logs the configuration. The
        password in `[broker] url`, when it has one, is shown as "***" too.
        """
        dumped = _redacted(self)
        dumped["broker"]["url"] = url_without_password(self.broker.url)
        return dumped


def url_without_password(url: str) -> str:
    """`url` with its password, if it has one, shown as "***" (for logs and printed configs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{REDACTED}@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redacted(model: BaseModel) -> dict[str, Any]:
    dumped = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if _is_secret(info):
            dumped[name] = REDACTED if value else value
        elif isinstance(value, BaseModel):
            dumped[name] = _redacted(value)
    return dumped


def _is_secret(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


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


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Say which file to read: the explicit one, `$SIGMA_CONFIG`, `./supervisor.toml`, or none."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a configuration file; `None` gives the embedded defaults.

    Raises `ConfigError` whose message is one line: `FILE: KEY.PATH: reason`.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping; errors name `source` and the key path."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_error(first_error(exc))}") from None


def describe_error(error: ErrorDetails) -> str:
    """Turn one pydantic error into `key.path: reason`, in words an operator expects."""
    location = dotted_location(error)
    context = error.get("ctx") or {}
    given = error.get("input")
    kind = error["type"]
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        symbol, key = bounds[kind]
        reason = f"must be {symbol} {context[key]} (got {given!r})"
    elif kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing":
        reason = "required key is missing"
    elif kind == "literal_error":
        reason = f"must be one of {context.get('expected')} (got {given!r})"
    elif kind == "value_error":
        reason = str(context.get("error", error["msg"]))
        if not location:
            return reason  # a whole-config check names its keys itself
    elif error["loc"] and error["loc"][-1] in SECRET_FIELD_NAMES:
        reason = f"{error['msg'][:1].lower()}{error['msg'][1:]}"  # never echo a secret
    else:
        reason = f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {given!r})"
    return f"{location or '(top level)'}: {reason}"


SECRET_FIELD_NAMES = frozenset(
    name
    for section in (AuthConfig, ApiConfig)
    for name, info in section.model_fields.items()
    if _is_secret(info)
)
"""Names of the configuration's secret fields; their values never appear in error messages."""
