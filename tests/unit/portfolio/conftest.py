"""A platform of the market (CSV bars), backtest and portfolio apps, in one process.

The portfolio reaches its peers through their HTTP contracts (in-process ASGI transport),
as under `trading serve`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.portfolio.app import create_app as create_portfolio
from services.portfolio.settings import PortfolioSettings
from tests.conftest import market_settings
from trading.host import build_platform_app


def portfolio_settings(data_dir: Path, **overrides: object) -> PortfolioSettings:
    """Return embedded-mode portfolio settings (SQLite under data_dir, no Redis)."""
    values: dict[str, object] = {"data_dir": data_dir, "database_url": None, "redis_url": None}
    values.update(overrides)
    return PortfolioSettings(**values)  # type: ignore[arg-type]


def build_platform(base: Path, portfolio: PortfolioSettings) -> TestClient:
    """Return a client (not started) of market + backtest + portfolio as `trading serve`
    mounts them, with state under base and the given portfolio settings."""
    apps = {
        "market": create_market(market_settings(base / "market", SHARED_CSV_DIR)),
        "backtest": create_backtest(
            BacktestSettings(data_dir=base / "backtest", database_url=None, redis_url=None)
        ),
        "portfolio": create_portfolio(portfolio),
    }
    return TestClient(build_platform_app(apps))


def wait_for_job(client: TestClient, location: str) -> dict[str, Any]:
    """Follow a job's status URL (long polls, no deadline: pytest's timeout bounds it) to
    its end; return its final status."""
    while True:
        status: dict[str, Any] = client.get(location, params={"wait_s": 5}).json()
        if status["status"] in ("succeeded", "failed"):
            return status


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Return a client of market + backtest + portfolio mounted as `trading serve` does."""
    base = tmp_path_factory.mktemp("portfolio-platform")
    with build_platform(base, portfolio_settings(base / "portfolio")) as client:
        yield client
