"""Configuration: one settings object, read from ``TREADLE_*`` environment variables."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
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
    # The second wall around sandbox workers (docs/sandbox.md): each worker runs as a uid and
    # gid of its own, from sandbox_uid_base to sandbox_uid_base + sandbox_uid_count - 1, given
    # back when it exits; nothing else on the host may use these ids, and the range must hold
    # more than sandbox_processes. With sandbox_wall_required, serve and worker refuse to start
    # when a layer of the wall is off (not root, no libseccomp, no namespaces); otherwise they
    # start, and say which layers are off in a warning and in /healthz.
    sandbox_uid_base: int = Field(default=100000, ge=1, le=2_000_000_000)
    sandbox_uid_count: int = Field(default=65536, ge=1, le=1_000_000)
    sandbox_wall_required: bool = False
    # Uploads are checked by loading their module in a sandbox worker, on threads of their own:
    # upload_checks at once in a process (at most sandbox_processes), upload_checks_per_tenant
    # of one tenant, with upload_queue_per_tenant more waiting their turn for at most
    # upload_queue_seconds; past that an upload answers 429 upload.busy. A module that has not
    # loaded within upload_check_seconds is refused (422) and its worker killed.
    upload_checks: int = Field(default=2, ge=1, le=64)
    upload_checks_per_tenant: int = Field(default=1, ge=1, le=64)
    upload_queue_per_tenant: int = Field(default=4, ge=0, le=1000)
    upload_queue_seconds: float = Field(default=10.0, gt=0)
    upload_check_seconds: float = Field(default=10.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    # The longest one host call (env.fetch: name lookup, connect and every read) may take,
    # whatever its step's timeout; past it the call fails with FetchTimeout.
    host_call_seconds: float = Field(default=30.0, gt=0, le=3600)
    # On stop (SIGTERM), replays in progress get this long to end; then their step bodies are
    # killed and their instances given back, to run again.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Where clients reach this server, e.g. https://treadle.example.com: the start of the url of
    # an approval link (docs/approval-links.md). Unset: http://<host>:<port> of `serve`; a link
    # minted through the API then starts with the request's own base URL.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # The HTTP listener of `serve` holds without a reverse proxy in front (docs/deploy.md):
    # a request's head must arrive within http_header_timeout seconds of the connection (or of
    # the previous response), its body within http_body_timeout of the head; a response under
    # way, such as an event stream, has no deadline.
    http_header_timeout: float = Field(default=10.0, gt=0)
    http_body_timeout: float = Field(default=30.0, gt=0)
    http_keep_alive_timeout: int = Field(default=5, ge=1)
    http_max_requests_per_connection: int = Field(default=1000, ge=1)
    # Unset: what the file-descriptor limit leaves once the database, the sandboxes and the
    # files have theirs. Past it, or past the cap per client address, a connection is answered
    # 503 or 429 at once, without reading it.
    http_max_connections: int | None = Field(default=None, ge=1)
    http_max_connections_per_client: int = Field(default=64, ge=1)
    # Addresses or networks, comma-separated (e.g. a reverse proxy's), without the cap per client.
    http_unlimited_clients: str = ""
    http_max_head_bytes: int = Field(default=16 * 1024, ge=1024)
    http_backlog: int = Field(default=2048, ge=1)
    # Live event streams open at once in a process, in all and per tenant; past either, opening
    # another answers 429 streams.too_many. Each costs a connection and a little memory only:
    # one reader feeds them all (dispatcher.http._notifier).
    max_streams: int = Field(default=1000, ge=1, le=100_000)
    max_streams_per_tenant: int = Field(default=100, ge=1, le=100_000)
    policy_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # "json": one JSON object per line, with the tenant, instance and trace of the work.
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("http_unlimited_clients")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        _networks(value)  # one that is not an address or a network fails here, at start
        return value

    def link_base(self) -> str:
        """The start of an approval link's url: ``public_url``, else this server's address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def admin_token_value(self) -> str | None:
        return self.admin_token.get_secret_value() if self.admin_token else None

    def unlimited_clients(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The networks of ``http_unlimited_clients``."""
        return _networks(self.http_unlimited_clients)


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
