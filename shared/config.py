"""Settings for every service: one pydantic-settings base, defaults that work on a laptop.

Nothing has to run for the defaults to work: the database is a SQLite file under `DATA_DIR`
and the cache is in-process. `DATABASE_URL=postgresql+asyncpg://...` and
`REDIS_URL=redis://...` switch on the real servers.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV_DIR = REPO_ROOT.parent / "shared" / "data" / "ohlcv" / "daily"


def default_data_dir() -> Path:
    """Return the per-user data folder (XDG data home, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trading-platform"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class BaseServiceSettings(BaseSettings):
    """Settings shared by every service."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state folder.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default: sqlite+aiosqlite under DATA_DIR.",
    )
    database_connect_timeout_s: float = Field(default=3.0, gt=0)
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


class MarketSettings(BaseServiceSettings):
    """Settings of the market-data service."""

    market_data_dir: Path | None = Field(
        default_factory=lambda: SHARED_CSV_DIR if SHARED_CSV_DIR.is_dir() else None,
        description="Folder of SYMBOL.csv files for the csv provider.",
    )
    market_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Provider order, comma-separated (csv, yfinance). Default: csv first "
        "when MARKET_DATA_DIR exists, then yfinance.",
    )
    yfinance_timeout_s: float = Field(default=5.0, gt=0)
    yfinance_max_attempts: int = Field(default=3, ge=1, le=10)
    yfinance_backoff_s: float = Field(default=0.5, ge=0)
    yfinance_requests_per_hour: int = Field(default=2000, ge=1)
    price_ttl_s: int = Field(default=300, ge=1)
    indicator_ttl_s: int = Field(default=60, ge=1)
    historical_ttl_s: int = Field(default=86400, ge=1)
    bulk_concurrency: int = Field(default=8, ge=1, le=64)

    _split = field_validator("market_providers", mode="before")(_split_csv)

    @field_validator("market_providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        known = {"csv", "yfinance"}
        bad = [v for v in value if v not in known]
        if bad:
            raise ValueError(f"unknown providers {bad}; choose from {sorted(known)}")
        return value

    def provider_order(self) -> list[str]:
        """Return the providers to ask, in order."""
        if self.market_providers:
            return list(self.market_providers)
        if self.market_data_dir is not None and Path(self.market_data_dir).is_dir():
            return ["csv", "yfinance"]
        return ["yfinance"]


@lru_cache
def get_market_settings() -> MarketSettings:
    """Return the market settings read from the environment (memoised)."""
    return MarketSettings()
