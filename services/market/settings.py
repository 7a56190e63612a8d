"""Settings of the market-data service (shared base: `shared.config.BaseServiceSettings`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from shared.config import REPO_ROOT, BaseServiceSettings, split_csv

# The real daily bars shipped beside the checkout (../shared/data/ohlcv/daily).
SHARED_CSV_DIR = REPO_ROOT.parent / "shared" / "data" / "ohlcv" / "daily"


class MarketSettings(BaseServiceSettings):
    """Settings of the market-data service."""

    unknown_prefixes: ClassVar[tuple[str, ...]] = ("MARKET_", "YFINANCE_")

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
    price_ttl_s: int = Field(
        default=300,
        ge=1,
        validation_alias=AliasChoices("PRICE_TTL_S", "CACHE_TTL", "price_ttl_s"),
        description="Seconds a price stays cached (the seed's CACHE_TTL).",
    )
    indicator_ttl_s: int = Field(default=60, ge=1)
    historical_ttl_s: int = Field(default=86400, ge=1)
    bulk_concurrency: int = Field(default=8, ge=1, le=64)
    market_stale_s: int = Field(
        default=300,
        ge=0,
        description="An expired history or indicator answer (and a price while the exchange "
        "is closed) is still served for this long while one request refreshes it. While the "
        "exchange is open a price is never older than PRICE_TTL_S.",
    )
    market_request_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's (a whole bulk_fetch's) budget for remote providers such as "
        "Yahoo; then they are skipped and the next provider (the CSV folder) answers.",
    )
    market_breaker_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive failures after which a provider is skipped (circuit open).",
    )
    market_breaker_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an open circuit skips its provider before one trial call.",
    )

    _split = field_validator("market_providers", mode="before")(split_csv)

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
