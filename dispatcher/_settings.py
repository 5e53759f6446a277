"""Configuration: one settings object, read from ``TREADLE_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a treadle process. Command-line options override the environment."""

    model_config = SettingsConfigDict(env_prefix="TREADLE_", extra="ignore")

    database_url: str = "sqlite:///./treadle.db"
    # How long serve and worker wait at start-up for a database that does not answer; unset:
    # for ever, 0: not at all (they exit at once with an error).
    database_wait_seconds: float | None = Field(default=None, ge=0)
    # The connections a process keeps to the database, never more (PostgreSQL: plus the one
    # the engine holds for wake-ups); a request that finds none free within db_pool_timeout
    # seconds is answered 503 database.busy.
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    admin_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    # GET /metrics on the API answers the admin token only; with metrics_port set it is also
    # served without credentials on a listener of its own (how `treadle worker` exposes it).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Replays wait mostly on commits, so throughput grows with how many run at once; idle
    # runner threads cost nothing and sandbox processes are started on demand.
    workers: int = Field(default=32, ge=1, le=1024, description="instances replayed at once")
    sandbox_processes: int = Field(default=32, ge=1, le=1024)
    sandbox_per_tenant: int = Field(default=16, ge=1, le=1024)
    lease_seconds: float = Field(default=30.0, gt=0)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    policy_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def admin_token_value(self) -> str | None:
        return self.admin_token.get_secret_value() if self.admin_token else None
