"""The configuration: pydantic models of `supervisor.toml`, and `load_config()`.

Every model is frozen and forbids unknown keys, so a typo is an error that names the key. Times are
in seconds (`*_s`), sizes say their unit in the name. The models' defaults are the embedded
configuration that `sigma serve` runs with when no file is given; the repository's
`supervisor.toml` spells the same values out.

Which file is read: `--config FILE`, else `$SIGMA_CONFIG`, else `./supervisor.toml` when it
exists, else the embedded defaults.

Every public name is importable from here. Read in this order:
- `section`: `Section`, the base of every section, and the field types they share;
- `gateway`: `[gateway]`, `[auth]`, `[api]`, `[limits]` (the gateway port), and `is_loopback()`;
- `pipeline`: `[engine]`, `[poller]`, `[heartbeat]`, `[hub]`, `[broker]` (the event pipeline);
- `process`: `[supervisor]`, `[faults]`, `[logging]` (how the process itself runs);
- `loading`: `Config` (the whole file), `load_config()`, `parse_config()`, error text;
- `redaction`: which fields are secret, and how a printed configuration hides them.
"""

from sigma.config.gateway import (
    JWT_SECRET_ENV_VAR,
    MIN_HS256_SECRET_BYTES,
    ApiConfig,
    AuthConfig,
    GatewayConfig,
    LimitsConfig,
    is_loopback,
)
from sigma.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_NAME,
    SECRET_FIELD_NAMES,
    Config,
    describe_error,
    load_config,
    parse_config,
    resolve_config_path,
)
from sigma.config.pipeline import (
    REDIS_URL_SCHEMES,
    BrokerConfig,
    EngineConfig,
    HeartbeatConfig,
    HubConfig,
    PollerConfig,
)
from sigma.config.process import BackoffConfig, FaultsConfig, LoggingConfig, SupervisorConfig
from sigma.config.redaction import REDACTED, SECRET_FIELD, url_without_password
from sigma.config.section import Port, PositiveSeconds, Section

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_NAME",
    "JWT_SECRET_ENV_VAR",
    "MIN_HS256_SECRET_BYTES",
    "REDACTED",
    "REDIS_URL_SCHEMES",
    "SECRET_FIELD",
    "SECRET_FIELD_NAMES",
    "ApiConfig",
    "AuthConfig",
    "BackoffConfig",
    "BrokerConfig",
    "Config",
    "EngineConfig",
    "FaultsConfig",
    "GatewayConfig",
    "HeartbeatConfig",
    "HubConfig",
    "LimitsConfig",
    "LoggingConfig",
    "PollerConfig",
    "Port",
    "PositiveSeconds",
    "Section",
    "SupervisorConfig",
    "describe_error",
    "is_loopback",
    "load_config",
    "parse_config",
    "resolve_config_path",
    "url_without_password",
]
