"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    """Keep every app a test builds from the environment out of the user's data folder.

    Apps built with default settings (the gateway's embedded services, the demo) keep their
    SQLite file under DATA_DIR: point it at a folder of this test session, never ~/.local.
    """
    import tempfile

    if not os.environ.get("DATA_DIR"):
        session_dir = tempfile.mkdtemp(prefix="trading-tests-")
        config.stash[_SESSION_DIR] = session_dir
        os.environ["DATA_DIR"] = session_dir
        os.environ.setdefault("XDG_DATA_HOME", session_dir)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this session's data folder."""
    import shutil

    session_dir = config.stash.get(_SESSION_DIR, None)
    if session_dir:
        shutil.rmtree(session_dir, ignore_errors=True)


_SESSION_DIR = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def csv_dir() -> Path:
    """Return the shared folder of real daily OHLCV CSVs (a missing folder fails the test)."""
    if not SHARED_CSV_DIR.is_dir():
        pytest.fail(f"shared market data folder missing: {SHARED_CSV_DIR}")
    return SHARED_CSV_DIR


@pytest.fixture(scope="session")
def aapl(csv_dir: Path) -> pd.DataFrame:
    """Return AAPL.csv as read by pandas, indexed by date string."""
    return pd.read_csv(csv_dir / "AAPL.csv", dtype={"date": str}).set_index("date")


def market_settings(tmp_path: Path, csv: Path, **overrides: object) -> MarketSettings:
    """Return embedded-mode settings (SQLite under tmp_path, no Redis, csv provider only)."""
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "market_data_dir": csv,
        "market_providers": ["csv"],
        "redis_url": None,
        "database_url": None,
    }
    values.update(overrides)
    return MarketSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, csv_dir: Path) -> MarketSettings:
    """Return embedded-mode market settings in a fresh temporary folder."""
    return market_settings(tmp_path, csv_dir)


@pytest.fixture
def client(settings: MarketSettings) -> Iterator[TestClient]:
    """Return a client of a running market app (lifespan entered)."""
    with TestClient(create_app(settings)) as c:
        yield c
