"""Like with like: a walk-forward trades its windows as one run (positions carry across
boundaries) unless told to go flat; Monte Carlo drawdowns name their resolution."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.backtest.config import BacktestConfig, simulate_config
from services.backtest.engine.runner import Bars, simulate
from services.backtest.metrics import drawdowns
from services.backtest.strategies import build_targets
from services.backtest.walkforward import create_windows
from tests.unit.backtest.service.conftest import GOOG_SMA, csv_frame

TRAIN, TEST = 252, 63


def post(api: TestClient, path: str, body: dict) -> dict:
    answer = api.post(f"/backtest/{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def goog_bars() -> Bars:
    return Bars.from_frames({"GOOG": csv_frame("GOOG", "2004-08-19", "2013-03-01")})


def continuous_run(bars: Bars) -> tuple[np.ndarray, int]:
    """Return (equity, closed trades) of ONE backtest over the walk-forward's test bars with
    GOOG_SMA's fixed parameters, entering in the position the train bars leave."""
    config = BacktestConfig.model_validate(GOOG_SMA)
    targets = build_targets("sma_crossover", GOOG_SMA["strategy"]["params"], bars)[:, 0]
    windows = create_windows(bars.n_bars, TRAIN, TEST)
    first, last = windows[0][2], windows[-1][3]
    t = targets[first:last].copy()
    if np.isnan(t[0]):
        held = targets[:first][~np.isnan(targets[:first])]
        t[0] = held[-1]
    oos = Bars(
        open=bars.open[first:last],
        high=bars.high[first:last],
        low=bars.low[first:last],
        close=bars.close[first:last],
        index=bars.index[first:last],
        symbols=bars.symbols,
    )
    sim = simulate(oos, t[:, None], config.to_spec()._replace(warmup=0))
    return sim.equity, sim.n_trades


def test_default_walk_forward_is_continuous_trading_and_flat_at_boundary_is_not(
    api: TestClient,
) -> None:
    body = {**GOOG_SMA, "train_period": TRAIN, "test_period": TEST, "equity_points": 20_000}
    carried = post(api, "walk_forward", body)
    flat = post(api, "walk_forward", {**body, "flat_at_boundary": True})
    equity, trades = continuous_run(goog_bars())

    # the same parameters in every window: the walk-forward IS one continuous backtest
    np.testing.assert_allclose(carried["equity"]["equity"], equity, rtol=1e-9)
    assert carried["metrics"]["final_capital"] == pytest.approx(equity[-1], rel=1e-9)
    assert carried["metrics"]["total_trades"] == trades  # no round trip at the boundaries
    assert sum(w["out_of_sample"]["total_trades"] for w in carried["windows"]) == trades
    chained = np.prod([1 + w["out_of_sample"]["total_return"] for w in carried["windows"]])
    assert carried["metrics"]["final_capital"] == pytest.approx(10_000 * chained, rel=1e-9)
    # flat at every boundary: a forced exit and re-entry (0.2% a side) wherever a position
    # was held across, so more round trips and a different final equity
    n_windows = carried["n_windows"]
    assert trades < flat["metrics"]["total_trades"] <= trades + n_windows
    assert flat["metrics"]["final_capital"] != pytest.approx(equity[-1], rel=1e-6)


def test_monte_carlo_drawdowns_are_compared_at_their_own_resolution(api: TestClient) -> None:
    run = post(api, "backtest", GOOG_SMA)
    mc = post(api, "monte_carlo", {"run_id": run["run_id"], "n_runs": 300, "seed": 1})
    sim = simulate_config(BacktestConfig.model_validate(GOOG_SMA), goog_bars())
    trade_path = np.cumprod(1.0 + sim.trade_returns)

    assert mc["block_bootstrap"]["drawdown_resolution"] == "bar"
    assert mc["trade_bootstrap"]["drawdown_resolution"] == "trade"
    assert mc["actual_max_drawdown"] == pytest.approx(run["metrics"]["max_drawdown"])
    assert mc["actual_trade_max_drawdown"] == pytest.approx(drawdowns(trade_path, 1.0).max_drawdown)
    # marking equity only at trade closes hides intra-trade lows: never deeper than bar to bar
    assert mc["actual_trade_max_drawdown"] >= mc["actual_max_drawdown"]
    assert "trade-to-trade" in mc["reading"]
    assert f"{mc['actual_trade_max_drawdown']:.1%}" in mc["reading"]
