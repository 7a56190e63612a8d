"""The seed's configuration names work, or are reported; URLs get their async driver."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.market.settings import MarketSettings
from shared.config import BaseServiceSettings, async_database_url
from shared.db import Database


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/trading", "postgresql+asyncpg://u:p@db:5432/trading"),
        ("postgres://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        ("postgresql+asyncpg://u@db/t", "postgresql+asyncpg://u@db/t"),
        ("postgresql://u@db/t?sslmode=require", "postgresql+asyncpg://u@db/t?ssl=require"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


def test_postgres_url_and_cache_ttl_from_the_seed_are_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("POSTGRES_URL", "postgresql://trader@db:5432/trading")
    monkeypatch.setenv("CACHE_TTL", "120")
    s = MarketSettings(_env_file=None)  # type: ignore[call-arg]
    assert s.resolved_database_url() == "postgresql+asyncpg://trader@db:5432/trading"
    assert s.price_ttl_s == 120


def test_sslmode_reaches_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/t")
    monkeypatch.setenv("DATABASE_SSLMODE", "verify-full")
    db = Database.from_settings(BaseServiceSettings(_env_file=None))  # type: ignore[call-arg]
    assert db.engine.url.drivername == "postgresql+asyncpg"
    assert db.connect_args["ssl"] == "verify-full"
    monkeypatch.setenv("DATABASE_SSLMODE", "sometimes")
    with pytest.raises(ValueError, match="database_sslmode"):
        BaseServiceSettings(_env_file=None)  # type: ignore[call-arg]


def test_unknown_settings_under_a_service_prefix_are_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from services.market.app import create_app

    monkeypatch.setenv("MARKET_PROVIDER", "csv")  # a typo of MARKET_PROVIDERS
    monkeypatch.setenv("MARKET_DATA_DIR", str(tmp_path))
    settings = MarketSettings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.unknown_settings() == ["MARKET_PROVIDER"]
    with caplog.at_level(logging.WARNING):
        create_app(settings)
    assert "MARKET_PROVIDER" in caplog.text


def test_a_peer_url_is_not_reported_as_a_typo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKET_URL", "http://market:8000")  # read by backtest and predictor
    monkeypatch.setenv("MARKET_PROVIDRES", "csv")
    settings = MarketSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.unknown_settings() == ["MARKET_PROVIDRES"]
