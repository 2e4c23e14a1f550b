"""The configuration: pydantic models of `supervisor.toml`, and `load_config()`.

Every model is frozen and forbids unknown keys, so a typo is an error that names the key. Times are
in seconds (`*_s`), sizes say their unit in the name. The models' defaults are the embedded
configuration that `sigma serve` runs with when no file is given; the repository's
`supervisor.toml` spells the same values out.

Which file is read: `--config FILE`, else `$SIGMA_CONFIG`, else `./supervisor.toml` when it
exists, else the embedded defaults.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from sigma.errors import ConfigError

CONFIG_ENV_VAR = "SIGMA_CONFIG"
DEFAULT_CONFIG_NAME = "supervisor.toml"

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]

EVENT_TYPES: tuple[str, ...] = (
    "agent_status",
    "compression_update",
    "connection_error",
    "heartbeat",
    "notification",
    "rpc_error",
    "storage_update",
    "system_status",
)
"""The eight core event types, sorted."""


class Section(BaseModel):
    """Base of every configuration section: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewayConfig(Section):
    """`[gateway]`: the listening socket for WebSocket clients and HTTP routes."""

    host: str = "127.0.0.1"
    port: Port = 12080
    handshake_timeout_s: PositiveSeconds = 10.0
    drain_timeout_s: PositiveSeconds = 5.0
    max_frame_bytes: int = Field(default=64 * 1024, ge=125)
    max_connections: int = Field(default=20_000, ge=1)
    max_connections_per_ip: int = Field(default=20_000, ge=1)
    max_http_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


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
    """`[hub]`: per-client queues, the slow-client policy and the resume history."""

    queue_size: int = Field(default=256, ge=1)
    slow_client_policy: Literal["disconnect", "drop_oldest", "conflate"] = "disconnect"
    history_size: int = Field(default=1024, ge=0)
    inbox_size: int = Field(default=1024, ge=1)
    max_subscriptions: int = Field(default=64, ge=1)


class AuthConfig(Section):
    """`[auth]`: who may connect."""

    mode: Literal["none", "jwt"] = "none"
    jwt_secret: str = Field(default="", repr=False)
    allowed_origins: tuple[str, ...] = ()


class ApiConfig(Section):
    """`[api]`: the publish endpoint; an empty key turns it off."""

    key: str = Field(default="", repr=False)


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
    """`[supervisor]`: the root supervisor's strategy, restart intensity and backoff."""

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    max_restarts: int = Field(default=5, ge=0)
    max_seconds: PositiveSeconds = 10.0
    shutdown_timeout_s: PositiveSeconds = 5.0
    backoff: BackoffConfig = BackoffConfig()


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
    auth: AuthConfig = AuthConfig()
    api: ApiConfig = ApiConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    logging: LoggingConfig = LoggingConfig()


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
        first = exc.errors(include_url=False)[0]
        raise ConfigError(f"{source}: {describe_error(first)}") from None


def describe_error(error: ErrorDetails) -> str:
    """Turn one pydantic error into `key.path: reason`, in words an operator expects."""
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
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
    else:
        reason = f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {given!r})"
    return f"{location}: {reason}"
