"""Pure pieces of the service: window cutting, downsampling, series storage, the grid, and
migration 0003 on SQLite with runs in place."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from hypothesis import given, settings
from hypothesis import strategies as st

from services.backtest.grid import plan_search
from services.backtest.reports import downsample
from services.backtest.repository import Series, decode_series, encode_series
from services.backtest.schemas import OptimizeRequest
from services.backtest.tables import SCHEMA as BACKTEST
from services.backtest.walkforward import create_windows
from shared.db import Database
from shared.errors import ValidationProblemError
from shared.http import unregister_local_app
from shared.migrate import alembic_config
from tests.unit.backtest.service.conftest import GOOG_SMA, fills_stored_both_ways, platform_client


def seed_windows(n: int, train: int, test: int) -> list[tuple[int, int, int, int]]:
    """The seed's `_create_windows` loop, on bar positions."""
    windows, start_idx = [], 0
    while start_idx + train + test <= n:
        train_end = start_idx + train
        windows.append((start_idx, train_end, train_end, train_end + test))
        start_idx += test
    return windows


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 3000),
    train=st.integers(1, 600),
    test=st.integers(1, 300),
    anchored=st.booleans(),
)
def test_windows_are_the_seeds(n: int, train: int, test: int, anchored: bool) -> None:
    windows = create_windows(n, train, test, anchored)
    seed = seed_windows(n, train, test)

    expected = (n - train - test) // test + 1 if n >= train + test else 0
    assert len(windows) == len(seed) == expected
    for w, s in zip(windows, seed, strict=True):
        assert w[1:] == s[1:]
        assert w[0] == (0 if anchored else s[0])


@given(n=st.integers(1, 5000), points=st.integers(2, 600))
def test_downsampling_keeps_both_ends_and_order(n: int, points: int) -> None:
    idx = downsample(n, points)

    assert idx[0] == 0 and idx[-1] == n - 1
    assert len(idx) == min(n, points) or (n > points and len(idx) <= points)
    assert np.all(np.diff(idx) > 0)


def test_a_series_round_trips_through_its_blob() -> None:
    dates = np.array(["1999-12-31", "2000-01-03", "2024-02-29"], dtype="datetime64[D]")
    series = Series(dates, np.array([1.0, 1.5, np.pi]), np.array([1.0, 0.9, 1e-300]))
    back = decode_series(encode_series(series))

    np.testing.assert_array_equal(back.dates, dates)
    np.testing.assert_array_equal(back.equity, series.equity)
    np.testing.assert_array_equal(back.benchmark, series.benchmark)


def request(**changes: Any) -> OptimizeRequest:
    return OptimizeRequest.model_validate({**GOOG_SMA, **changes})


def test_the_grid_takes_ranges_lists_and_constraints() -> None:
    r = request(
        param_grid={"fast": {"start": 5, "stop": 50, "step": 1}, "slow": [10, 20, 200]},
        constraints=["fast < slow", "slow != 20"],
    )
    plan = plan_search(r, "sma_crossover", r.strategy.params)

    expected = [(f, s) for f in range(5, 51) for s in (10, 200) if f < s]
    assert [(c["fast"], c["slow"]) for c in plan.combos] == expected
    assert plan.n_combinations == len(expected) and plan.n_invalid == 0
    assert all(isinstance(c["fast"], int) for c in plan.combos)


def test_random_search_draws_without_replacement() -> None:
    r = request(
        param_grid={"fast": {"start": 2, "stop": 60, "step": 1}, "slow": [100, 150]},
        method="random",
        n_trials=30,
        seed=5,
    )
    a = plan_search(r, "sma_crossover", r.strategy.params, method="random", n_trials=30, seed=5)
    b = plan_search(r, "sma_crossover", r.strategy.params, method="random", n_trials=30, seed=5)

    pairs = [(c["fast"], c["slow"]) for c in a.combos]
    assert pairs == [(c["fast"], c["slow"]) for c in b.combos]
    assert len(set(pairs)) == len(pairs) == 30


def test_float_parameters_take_float_steps() -> None:
    r = OptimizeRequest.model_validate(
        {
            **GOOG_SMA,
            "strategy": {"name": "mean_reversion", "params": {}},
            "param_grid": {"bb_std": {"start": 1.5, "stop": 2.5, "step": 0.25}},
        }
    )
    plan = plan_search(r, "mean_reversion", r.strategy.params)

    assert [c["bb_std"] for c in plan.combos] == [1.5, 1.75, 2.0, 2.25, 2.5]


def test_a_grid_too_large_to_enumerate_is_refused() -> None:
    r = request(
        param_grid={
            "fast": {"start": 2, "stop": 500, "step": 1},
            "slow": {"start": 3, "stop": 10_000, "step": 1},
        }
    )
    with pytest.raises(ValidationProblemError) as e:
        plan_search(r, "sma_crossover", r.strategy.params)
    assert e.value.field == "param_grid"


def test_migration_backtest_0002_drops_its_columns_in_place_on_sqlite(tmp_path: Path) -> None:
    with platform_client(tmp_path) as client:
        run = client.post("/backtest/backtest", json=GOOG_SMA).json()
    unregister_local_app("market")
    unregister_local_app("backtest")
    path = tmp_path / "trading.db"

    def fills() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("select count(*) from backtest_trades").fetchone()[0])

    async def move(target: str, down: bool) -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            async with db.engine.begin() as conn:

                def go(c: Any) -> None:
                    cfg = alembic_config(BACKTEST, c)
                    (command.downgrade if down else command.upgrade)(cfg, target)

                await conn.run_sync(go)
        finally:
            await db.dispose()

    before = fills()
    asyncio.run(move("backtest_0001", True))
    after_down = fills()
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("pragma table_info(backtest_results)")}
    asyncio.run(move("head", False))

    assert before == after_down == run["trades"]["fills"]
    assert "series" not in columns and "symbol" in columns


def test_bulk_inserted_fills_read_back_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    # repository.insert_many applies each column's bind processor itself and calls the
    # driver's executemany once: the rows must be exactly what SQLAlchemy's own
    # executemany stores (timestamps, NULLs, floats to the bit), here on SQLite
    plain, bulk = asyncio.run(fills_stored_both_ways(f"sqlite+aiosqlite:///{tmp_path}/f.db"))
    assert len(plain) > 50
    assert bulk == plain
