"""Settings for every service: one pydantic-settings base, defaults that work on a laptop.

Nothing has to run for the defaults to work: the database is a SQLite file under `DATA_DIR`
and the cache is in-process. `DATABASE_URL=postgresql+asyncpg://...` and
`REDIS_URL=redis://...` switch on the real servers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """Return the per-user data folder (XDG data home, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trading-platform"


class BaseServiceSettings(BaseSettings):
    """Settings shared by every service."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)
    # Environment prefixes owned by this service: a variable under one that names no setting
    # is reported at start (a typo would otherwise be silently ignored).
    unknown_prefixes: ClassVar[tuple[str, ...]] = ()

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state folder.")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "POSTGRES_URL", "database_url"),
        description="Database URL (DATABASE_URL, or the seed's POSTGRES_URL). A plain "
        "postgresql:// or sqlite:// URL gets its async driver. Default: SQLite under DATA_DIR.",
    )
    database_sslmode: (
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None
    ) = Field(
        default=None,
        description="TLS to a remote PostgreSQL (libpq's sslmode names); also read from "
        "`?sslmode=` in the URL.",
    )
    database_connect_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="Connecting to the database, and waiting for a pooled connection.",
    )
    database_command_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="One SQL statement. A request's wait on the database is bounded by "
        "connect + command timeouts, a silent network drop included (then 503).",
    )
    health_timeout_s: float = Field(
        default=2.0, gt=0, description="`/health` waits this long for `SELECT 1`."
    )
    redis_url: str | None = Field(default=None, description="redis:// URL; unset = L1 only.")
    redis_prefix: str = Field(default="", description="Prefix for every Redis key.")
    redis_timeout_s: float = Field(default=0.5, gt=0)
    redis_max_connections: int = Field(
        default=50, ge=1, description="Redis connections per process (a pool that waits)."
    )
    redis_pool_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait for a free Redis connection; then the call skips Redis "
        "(a busy pool, not an outage).",
    )
    l1_cache_size: int = Field(default=1000, ge=1, description="L1 entries at most.")
    l1_cache_max_mb: int = Field(default=256, ge=1, description="L1 memory bound (JSON size).")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token the services require when set."
    )
    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SERVICE_TOKEN", "service_token"),
        description="Bearer token the services send one another (in place of API_TOKEN): "
        "accepted wherever API_TOKEN is, and its requests are the platform's own, not counted "
        "against any user's rate limit. Calls between co-hosted services need none.",
    )
    auth_failures_per_minute: int = Field(
        default=20,
        ge=0,
        description="Failed authentications (401) per client address per minute; past it every "
        "request of that address is answered 429 with Retry-After until the minute ends "
        "(counted per process). 0 turns the limit off.",
    )
    retention_runs_days: int = Field(
        default=0,
        ge=0,
        description="`trading prune` deletes stored backtest runs (and their fills) older than "
        "this many days; 0 keeps them forever.",
    )
    retention_jobs_days: int = Field(
        default=30,
        ge=0,
        description="`trading prune` deletes finished jobs (succeeded or failed) that ended more "
        "than this many days ago; 0 keeps them forever. Queued and running jobs are kept.",
    )
    retention_predictions_days: int = Field(
        default=90,
        ge=0,
        description="`trading prune` deletes logged predictions older than this many days; 0 "
        "keeps them forever.",
    )
    log_level: str = "INFO"
    trading_master_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts stored API keys (`trading keys`); default: the "
        "OS keyring's.",
    )
    # Jobs (shared.jobs): long work runs as a job whose state lives in the database.
    job_max_running: int = Field(
        default=2, ge=1, description="Jobs running at once per service process; more wait queued."
    )
    job_max_queued: int = Field(
        default=50,
        ge=0,
        description="Jobs waiting for a slot per service process; more are refused with 503 "
        "`jobs_full` and Retry-After.",
    )
    job_max_run_s: float = Field(
        default=3600.0,
        gt=0,
        description="Longest a job may run (any kind not in JOB_MAX_RUN_S_BY_KIND); then it "
        "is stopped and ends failed with code `timeout`.",
    )
    job_max_run_s_by_kind: dict[str, float] = Field(
        default_factory=dict,
        description='Longest run per job kind, as JSON (e.g. {"optimize": 600, "training": '
        "7200}); other kinds use JOB_MAX_RUN_S.",
    )
    job_thread_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads for job tasks run with where='thread' (GIL-free numba kernels).",
    )
    job_process_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes for job tasks run with where='process' (started on "
        "first use).",
    )
    job_process_idle_s: float = Field(
        default=60.0,
        ge=0,
        description="Job worker processes exit after this many seconds without a task (a "
        "training worker holds ~1 GB of TensorFlow); the next task starts new ones. 0 keeps "
        "them.",
    )
    job_progress_interval_s: float = Field(
        default=0.5, ge=0, description="At most one progress write per job per this interval."
    )
    job_heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often a runner stamps its unfinished jobs."
    )
    job_stale_after_s: float = Field(
        default=60.0,
        gt=0,
        description="An unfinished job whose owner has not stamped it for this long is marked "
        "failed/interrupted (at least twice the heartbeat).",
    )
    job_shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="On shutdown, wait this long for running tasks to stop."
    )
    job_dedupe_s: float = Field(
        default=600.0,
        ge=0,
        description="A job submitted again (same kind and request, or same `Idempotency-Key`) "
        "within this many seconds of the first, while that one is unfinished, answers that "
        "job instead of starting another. 0 turns this off.",
    )
    # Server limits (shared.limits): every wait and every request is bounded.
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's line and headers must arrive within this many seconds of its "
        "first byte (or of the connection); slower clients are answered 408 and cut.",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request body must arrive within this many seconds of its headers; "
        "slower clients are cut.",
    )
    http_keep_alive_s: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this long."
    )
    http_max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request line plus headers (431 above)."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Largest request body (413 problem above)."
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="Requests a service handles at once per process (ops routes exempt).",
    )
    max_queued_requests: int = Field(
        default=1024,
        ge=0,
        description="Requests beyond max_concurrent_requests that may wait for a slot; more "
        "are answered 503 with Retry-After at once.",
    )
    queue_timeout_s: float = Field(
        default=10.0, ge=0, description="Longest wait for a slot before a 503 with Retry-After."
    )
    overload_retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After (seconds) of a 503 answered under overload."
    )
    rate_limit_per_minute: int = Field(
        default=1200,
        ge=0,
        description="Requests per minute per client (bearer token, else address) and operation "
        "(Redis key ratelimit:{user_id}:{endpoint}); 0 turns rate limiting off.",
    )
    dask_scheduler_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DASK_SCHEDULER_ADDRESS", "dask_scheduler_address"),
        description="tcp://host:8786 of a Dask scheduler: job tasks then run on that cluster "
        "(needs the `dask` extra). Unset: local threads and processes.",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        return async_database_url(value) if value else value

    def resolved_database_url(self) -> str:
        """Return DATABASE_URL with its async driver, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'trading.db'}"

    def unknown_settings(self, prefixes: tuple[str, ...] | None = None) -> list[str]:
        """Return environment variables under prefixes that name no setting (likely typos)."""
        prefixes = self.unknown_prefixes if prefixes is None else prefixes
        if not prefixes:
            return []
        known = {name.upper() for name in type(self).model_fields}
        for field in type(self).model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                known.update(str(a).upper() for a in alias.choices)
            elif isinstance(alias, str):
                known.add(alias.upper())
        return sorted(
            key
            for key in os.environ
            if key.upper().startswith(prefixes)
            and key.upper() not in known
            and not PEER_URL.match(key.upper())  # MARKET_URL is how the others find market
        )


# `<SERVICE>_URL`: where a service's peers reach it (read by the peers, not by the service).
PEER_URL = re.compile(r"^[A-Z][A-Z0-9]*_URL$")

# Drivers the services run on: a URL without one (the seed's `postgresql://`) would make
# SQLAlchemy look for psycopg2, which is not installed, and crash at start.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """Return url with the async driver this platform uses (asyncpg, aiosqlite).

    A libpq `sslmode=` query parameter becomes asyncpg's `ssl=` parameter.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url.split('@')[-1]!r}")
    scheme = _ASYNC_DRIVERS.get(scheme.lower(), scheme)
    if scheme.startswith("postgresql") and "sslmode=" in rest:
        rest = re.sub(r"(?<=[?&])sslmode=", "ssl=", rest)
    return f"{scheme}://{rest}"


def split_csv(value: object) -> object:
    """Split a comma-separated environment value into a list (for list settings)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
