"""Fixtures of the backtest service tests: the market and backtest apps co-hosted in-process,
as `trading serve` hosts them, on real CSV bars, embedded SQLite and the in-process cache."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from services.backtest import repository as repo
from services.backtest.app import create_app
from services.backtest.engine.runner import Bars
from services.backtest.reports import evaluate, fill_rows
from services.backtest.schemas import BacktestRequest
from services.backtest.settings import BacktestSettings
from services.backtest.tables import SCHEMA
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from shared.db import Database
from shared.http import unregister_local_app
from shared.tables import utcnow
from tests.conftest import market_settings
from tests.unit.backtest.conftest import load_frame
from trading.host import build_platform_app

WAIT_S = 120.0
# The example: backtesting.py's SmaCross on GOOG, long and short, 0.2% commission.
GOOG_SMA: dict[str, Any] = {
    "symbol": "GOOG",
    "start_date": "2004-08-19",
    "end_date": "2013-03-01",
    "initial_capital": 10000,
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 20, "allow_short": True}},
    "commission": 0.0,
    "commission_rate": 0.002,
    "min_commission": 0.0,
    "slippage": 0.0,
    "position_size": {"method": "all_in"},
    "fractional_shares": False,
    "stop_loss": None,
    "take_profit": None,
    "max_positions": 1,
    "fill": "next_open",
    "warmup_period": 0,
    "data_frequency": "1d",
    "risk_free_rate": 0.02,
}


def backtest_settings(data_dir: Path, **overrides: Any) -> BacktestSettings:
    """Return embedded-mode backtest settings (SQLite in data_dir, no Redis)."""
    values: dict[str, Any] = {"data_dir": data_dir, "database_url": None, "redis_url": None}
    values.update(overrides)
    return BacktestSettings(**values)


def platform_client(data_dir: Path, **overrides: Any) -> TestClient:
    """Return a client of market + backtest mounted as `trading serve` mounts them."""
    apps = {
        "market": create_market(market_settings(data_dir, SHARED_CSV_DIR)),
        "backtest": create_app(backtest_settings(data_dir, **overrides)),
    }
    return TestClient(build_platform_app(apps))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A running platform (one per test module); requests go to `/backtest/...`."""
    with platform_client(tmp_path_factory.mktemp("backtest-api")) as client:
        yield client
    unregister_local_app("market")
    unregister_local_app("backtest")


@pytest.fixture(scope="module")
def jobs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A platform whose backtest service runs every long request as a job."""
    limits = {
        "backtest_sync_max_trial_bars": 0,
        "backtest_sync_max_mc_steps": 0,
        "backtest_sync_max_symbols": 1,
        "job_progress_interval_s": 0.0,
    }
    with platform_client(tmp_path_factory.mktemp("backtest-jobs"), **limits) as client:
        yield client
    unregister_local_app("market")
    unregister_local_app("backtest")


def wait_done(client: TestClient, url: str) -> dict[str, Any]:
    """Poll a job's status URL until it has ended (bounded); return its status."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url} did not end within {WAIT_S} s")


def csv_frame(symbol: str, start: str, end: str) -> pd.DataFrame:
    """Return a shared CSV's OHLC rows between two dates (inclusive), indexed by date."""
    df = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", parse_dates=["date"], index_col="date")
    return df.loc[start:end, ["open", "high", "low", "close"]]


async def fills_stored_both_ways(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Store one run's fills by SQLAlchemy's executemany and by `repository.insert_many`;
    return both as read back (every column but the ids)."""
    request = BacktestRequest.model_validate(
        {
            "symbols": ["AAPL", "KO"],
            "start_date": "2010-01-01",
            "end_date": "2020-01-01",
            "strategy": {"name": "mean_reversion", "params": {"allow_short": True}},
            "stop_loss": 0.05,
            "slippage": 0.001,
        }
    )
    bars = Bars.from_frames(
        {s: load_frame(s).loc["2010-01-01":"2020-01-01"] for s in request.symbol_list}
    )
    ev = evaluate(request, bars)
    rows = fill_rows(ev.fills)
    assert any(r["pnl"] is None for r in rows) and any(r["pnl"] for r in rows)
    db = Database(url)
    await db.start(SCHEMA)
    read: list[list[tuple[Any, ...]]] = []
    try:
        for way in ("executemany", "insert_many"):
            run_id = uuid.uuid4()
            async with db.session() as s:
                await repo.insert_run(
                    s,
                    run_id=run_id,
                    created_at=utcnow(),
                    strategy="mean_reversion",
                    symbols=request.symbol_list,
                    start_date=date(2010, 1, 1),
                    end_date=date(2020, 1, 1),
                    initial_capital=100_000.0,
                    final_capital=ev.metrics.final_capital,
                    headline={},
                    configuration={},
                    metrics={},
                    bars_hash="",
                    series=repo.Series(ev.dates, ev.sim.equity, ev.benchmark_equity),
                    fills={},
                )
                if way == "executemany":
                    await s.execute(insert(repo.TRADES), [{"run_id": run_id, **f} for f in rows])
                else:
                    await repo.insert_many(s, repo.TRADES, ev.fills, run_id=run_id)
                await s.commit()
            async with db.session() as s:
                rows, _ = await repo.load_fills(s, run_id=run_id)
            read.append([tuple(r)[2:] for r in rows])
    finally:
        await db.dispose()
    return read[0], read[1]
