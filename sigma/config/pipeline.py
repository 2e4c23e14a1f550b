"""The event pipeline's sections: `[engine]`, `[poller]`, `[heartbeat]`, `[hub]`, `[broker]`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from sigma.config.section import Port, PositiveSeconds, Section


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
