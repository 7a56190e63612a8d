"""Settings for every service: one pydantic-settings base, defaults that work on a laptop.

Nothing has to run for the defaults to work: the database is a SQLite file under `DATA_DIR`
and the cache is in-process. `DATABASE_URL=postgresql+asyncpg://...` and
`REDIS_URL=redis://...` switch on the real servers.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """Return the per-user data folder (XDG data home, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trading-platform"


class BaseServiceSettings(BaseSettings):
    """Settings shared by every service."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state folder.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default: sqlite+aiosqlite under DATA_DIR.",
    )
    database_connect_timeout_s: float = Field(default=3.0, gt=0)
    health_timeout_s: float = Field(
        default=2.0, gt=0, description="`/health` waits this long for `SELECT 1`."
    )
    redis_url: str | None = Field(default=None, description="redis:// URL; unset = L1 only.")
    redis_prefix: str = Field(default="", description="Prefix for every Redis key.")
    redis_timeout_s: float = Field(default=0.5, gt=0)
    l1_cache_size: int = Field(default=1000, ge=1, description="L1 entries at most.")
    l1_cache_max_mb: int = Field(default=256, ge=1, description="L1 memory bound (JSON size).")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token the services require when set."
    )
    log_level: str = "INFO"

    def resolved_database_url(self) -> str:
        """Return DATABASE_URL, or the embedded SQLite file under DATA_DIR."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'trading.db'}"


def split_csv(value: object) -> object:
    """Split a comma-separated environment value into a list (for list settings)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
