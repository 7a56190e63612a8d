"""Parameter sweeps and Monte Carlo resampling."""

from __future__ import annotations

import numpy as np
import pytest

from services.backtest import metrics as m
from services.backtest.engine.analysis import monte_carlo, sma_pairs, sweep_crossover, sweep_targets
from services.backtest.engine.runner import make_spec, simulate
from services.backtest.strategies import build_targets
from tests.unit.backtest.conftest import frame_bars, load_frame


@pytest.fixture(scope="module")
def bars():
    return frame_bars(load_frame("JPM").iloc[-1500:])


def test_sweep_rows_equal_single_backtests(bars) -> None:
    spec = make_spec(
        initial_capital=10_000,
        commission_rate=0.002,
        allow_short=True,
        stop_loss=0.08,
        slippage=0.0005,
    )
    pairs = sma_pairs(range(5, 21, 5), range(20, 61, 20))
    sweep = sweep_crossover(bars, pairs, spec, risk_free_rate=0.02, keep_returns=True)
    assert len(sweep.params) == len(pairs) == sweep.stats.shape[0]
    for i, (f, s) in enumerate(pairs):
        tgt = build_targets("sma_crossover", {"fast": f, "slow": s, "allow_short": True}, bars)
        one = simulate(bars, tgt, spec)
        assert sweep.column("final_capital")[i] == pytest.approx(one.final_capital, rel=1e-12)
        assert sweep.column("total_trades")[i] == one.n_trades
        np.testing.assert_allclose(sweep.returns[i], one.returns, rtol=1e-12, atol=1e-15)
        r = one.returns
        assert sweep.column("sharpe_ratio")[i] == pytest.approx(m.sharpe_ratio(r, 0.02, 252))
        assert sweep.column("sortino_ratio")[i] == pytest.approx(m.sortino_ratio(r, 0.02, 252))
        assert sweep.column("max_drawdown")[i] == pytest.approx(
            m.drawdowns(one.equity, 10_000).max_drawdown
        )
        assert sweep.column("annual_return")[i] == pytest.approx(m.annualized_return(r, 252))
    frame = sweep.frame()
    assert list(frame.columns[:2]) == ["fast", "slow"]
    # the kept returns feed the overfitting statistics
    dsr = m.deflated_sharpe_ratio(sweep.returns)
    pbo, _ = m.probability_of_backtest_overfitting(sweep.returns, n_splits=6)
    assert 0.0 <= dsr <= 1.0 and 0.0 <= pbo <= 1.0


def test_sweep_of_target_rows(bars) -> None:
    spec = make_spec(initial_capital=10_000, fill="close", fractional=True)
    rows = [build_targets("mean_reversion", {"rsi_period": p}, bars)[:, 0] for p in (7, 14, 21)]
    sweep = sweep_targets(bars, np.vstack(rows), spec, [{"rsi_period": p} for p in (7, 14, 21)])
    for i, row in enumerate(rows):
        one = simulate(bars, row, spec)
        assert sweep.column("final_capital")[i] == pytest.approx(one.final_capital, rel=1e-12)
    assert sweep.returns.shape == (3, 0)


def test_monte_carlo_is_seeded_and_consistent(bars) -> None:
    spec = make_spec(initial_capital=10_000, commission_rate=0.001, allow_short=True)
    res = simulate(bars, build_targets("sma_crossover", {"allow_short": True}, bars), spec)
    a = monte_carlo(res.trade_returns, res.returns, n_runs=500, seed=42)
    b = monte_carlo(res.trade_returns, res.returns, n_runs=500, seed=42)
    c = monte_carlo(res.trade_returns, res.returns, n_runs=500, seed=43)
    np.testing.assert_array_equal(a.trades.final_return, b.trades.final_return)
    np.testing.assert_array_equal(a.blocks.final_return, b.blocks.final_return)
    assert not np.array_equal(a.blocks.final_return, c.blocks.final_return)
    assert a.block == round(len(res.returns) ** (1 / 3))
    for dist in (a.trades, a.blocks):
        s = dist.summary()
        assert s["cvar"] >= s["var"]
        assert 0.0 <= s["probability_of_loss"] <= 1.0
        assert (dist.max_drawdown <= 0).all()
        p = s["final_return"]
        assert p["p5"] <= p["p25"] <= p["p50"] <= p["p75"] <= p["p95"]
    # a resampled trade sequence compounds the same trades: the product is order-free, so
    # drawing every trade exactly once reproduces the backtest's own growth
    growth = np.prod(1 + res.trade_returns) - 1
    assert growth == pytest.approx(res.final_capital / 10_000 - 1, rel=1e-9)


def test_block_bootstrap_of_one_whole_block_replays_a_rotation() -> None:
    r = np.array([0.1, -0.05, 0.02, 0.0])
    out = monte_carlo(np.empty(0), r, n_runs=50, block=4, seed=1)
    assert out.blocks.final_return == pytest.approx(np.full(50, np.prod(1 + r) - 1))
    assert (out.trades.final_return == 0).all()


@pytest.mark.parametrize("stop_loss", [None, 0.05])
def test_a_one_trial_sweep_runs_serially_to_the_same_row(bars, stop_loss) -> None:
    # one trial skips the parallel loop: the row must be the one a larger sweep computes
    spec = make_spec(initial_capital=10_000, commission_rate=0.001, stop_loss=stop_loss)
    pairs = sma_pairs(range(5, 16, 5), range(20, 41, 10))
    many = sweep_crossover(bars, pairs, spec, keep_returns=True, n_blocks=6)
    targets = np.vstack(
        [build_targets("sma_crossover", {"fast": f, "slow": s}, bars)[:, 0] for f, s in pairs]
    )
    many_t = sweep_targets(bars, targets, spec, keep_returns=True, n_blocks=6)
    for i, pair in enumerate(pairs):
        one = sweep_crossover(bars, [pair], spec, keep_returns=True, n_blocks=6)
        one_t = sweep_targets(bars, targets[i : i + 1], spec, keep_returns=True, n_blocks=6)
        for a, b in ((one, many), (one_t, many_t)):
            np.testing.assert_array_equal(a.stats[0], b.stats[i])
            np.testing.assert_array_equal(a.returns[0], b.returns[i])
            np.testing.assert_array_equal(a.blocks[0], b.blocks[i])
