"""`Config`, the whole configuration, and `load_config()`: which file, validation, error text.

Which file is read: `--config FILE`, else `$SIGMA_CONFIG`, else `./supervisor.toml` when it
exists, else the embedded defaults. A validation error becomes one line that names the file and
the key path (`describe_error`), never echoing a secret.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError, model_validator
from pydantic_core import ErrorDetails

from sigma.config.gateway import ApiConfig, AuthConfig, GatewayConfig, LimitsConfig, is_loopback
from sigma.config.pipeline import (
    BrokerConfig,
    EngineConfig,
    HeartbeatConfig,
    HubConfig,
    PollerConfig,
)
from sigma.config.process import FaultsConfig, LoggingConfig, SupervisorConfig
from sigma.config.redaction import is_secret, redacted, url_without_password
from sigma.config.section import Section
from sigma.errors import ConfigError, dotted_location, first_error

CONFIG_ENV_VAR = "SIGMA_CONFIG"
DEFAULT_CONFIG_NAME = "supervisor.toml"


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
        dumped = redacted(self)
        dumped["broker"]["url"] = url_without_password(self.broker.url)
        return dumped


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
    if is_secret(info)
)
"""Names of the configuration's secret fields; their values never appear in error messages."""
