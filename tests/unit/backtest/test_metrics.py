"""Every metric against an independent implementation on real backtest returns."""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from services.backtest import metrics as m
from services.backtest.config import BacktestConfig, simulate_config
from tests.unit.backtest.conftest import frame_bars, load_frame

PPY = 252.0
RF = 0.02


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    """Return a real SMA-crossover backtest on MSFT with its buy-and-hold benchmark."""
    df = load_frame("MSFT").iloc[-2520:]
    bars = frame_bars(df)
    base = {
        "symbol": "MSFT",
        "start_date": "2013-01-01",
        "end_date": "2023-10-27",
        "initial_capital": 100_000,
        "commission_rate": 0.001,
        "slippage": 0.0005,
    }
    cfg = BacktestConfig.model_validate(
        {**base, "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 40}}}
    )
    bench = BacktestConfig.model_validate({**base, "strategy": {"name": "buy_and_hold"}})
    res = simulate_config(cfg, bars)
    b = simulate_config(bench, bars)
    return {
        "df": df,
        "res": res,
        "returns": m.returns_from_equity(res.equity, 100_000),
        "bench_equity": b.equity,
        "bench_returns": m.returns_from_equity(b.equity, 100_000),
    }


def test_return_and_risk_ratios_match_empyrical(run: dict) -> None:
    r = run["returns"]
    rf = RF / PPY
    assert m.annualized_return(r, PPY) == pytest.approx(ep.annual_return(r, annualization=252))
    assert m.annualized_volatility(r, PPY) == pytest.approx(
        ep.annual_volatility(r, annualization=252)
    )
    assert m.sharpe_ratio(r, RF, PPY) == pytest.approx(
        ep.sharpe_ratio(r, risk_free=rf, annualization=252)
    )
    assert m.sortino_ratio(r, RF, PPY) == pytest.approx(
        ep.sortino_ratio(r, required_return=rf, annualization=252)
    )
    assert m.drawdowns(run["res"].equity, 100_000).max_drawdown == pytest.approx(ep.max_drawdown(r))
    metrics = m.compute_metrics(
        run["res"].equity, 100_000, years=10.0, periods_per_year=PPY, risk_free_rate=RF
    )
    assert metrics.calmar_ratio == pytest.approx(ep.calmar_ratio(r, annualization=252))
    assert metrics.total_return == pytest.approx(ep.cum_returns_final(r))


def test_alpha_beta_match_empyrical(run: dict) -> None:
    r, b = run["returns"], run["bench_returns"]
    alpha, beta = m.alpha_beta(r, b, RF, PPY)
    e_alpha, e_beta = ep.alpha_beta(r, b, risk_free=RF / PPY, annualization=252)
    assert beta == pytest.approx(e_beta)
    assert alpha == pytest.approx(e_alpha)
    assert 0.0 < beta < 1.0  # in the market part of the time, long and short


def test_drawdown_episodes_match_quantstats(run: dict) -> None:
    import quantstats as qs

    r = pd.Series(run["returns"], index=run["df"].index)
    assert r.iloc[0] == 0.0  # flat on the first bar: the curves start at the same peak
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r))
    dd = m.drawdowns(run["res"].equity, 100_000)
    assert dd.n_episodes == len(details)
    assert dd.avg_drawdown == pytest.approx(details["max drawdown"].mean() / 100, rel=1e-9)
    assert dd.max_drawdown == pytest.approx(details["max drawdown"].min() / 100, rel=1e-9)


def test_drawdown_duration_on_a_known_curve() -> None:
    eq = np.array([110, 100, 105, 120, 90, 95, 119, 121, 80.0])
    dd = m.drawdowns(eq, 100.0)
    # peaks: 110 (bar 0) recovered at 120 (bar 3): 3 bars; 120 (bar 3) recovered at 121
    # (bar 7): 4 bars; 121 (bar 7) still under at the end (bar 8): 1 bar
    assert dd.max_drawdown_duration == 4
    assert dd.n_episodes == 3
    assert dd.max_drawdown == pytest.approx(80 / 121 - 1)
    assert dd.avg_drawdown == pytest.approx(np.mean([100 / 110 - 1, 90 / 120 - 1, 80 / 121 - 1]))


def test_t_test_matches_scipy_and_ci_covers_the_mean(run: dict) -> None:
    r = run["returns"]
    t, p = m.t_test(r)
    ref = stats.ttest_1samp(r, 0.0)
    assert t == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    lo, hi = m.bootstrap_mean_ci(r, n_boot=2000, seed=1)
    assert lo < r.mean() < hi
    # against the normal-theory interval: same centre and width to within bootstrap noise
    half = stats.t.ppf(0.975, r.size - 1) * r.std(ddof=1) / math.sqrt(r.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert m.bootstrap_mean_ci(r, seed=7) == m.bootstrap_mean_ci(r, seed=7)


def test_trade_stats_from_the_fill_log(run: dict) -> None:
    res = run["res"]
    pnl = res.trade_pnls
    ts = m.trade_stats(pnl)
    assert ts.total_trades == res.n_trades == pnl.size
    assert ts.win_rate == pytest.approx((pnl > 0).sum() / pnl.size)
    assert ts.profit_factor == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
    assert ts.expectancy == pytest.approx(pnl.mean())
    # the round trips' pnl adds up to the account's gain
    assert pnl.sum() == pytest.approx(res.final_capital - 100_000, rel=1e-9)


def test_cagr_uses_calendar_time(run: dict) -> None:
    eq = run["res"].equity
    years = m.calendar_years(run["df"].index.to_numpy())
    assert 9.9 < years < 10.1
    assert m.cagr(eq, 100_000, years) == pytest.approx((eq[-1] / 100_000) ** (1 / years) - 1)
    # quantstats counts years as bars / periods: give it this run's bars per calendar year
    import quantstats as qs

    r = pd.Series(run["returns"], index=run["df"].index)
    assert m.cagr(eq, 100_000, years) == pytest.approx(
        qs.stats.cagr(r, periods=len(r) / years), rel=1e-9
    )


def _psr_reference(r: np.ndarray, sr_star: float) -> float:
    """The PSR written out from Bailey & Lopez de Prado (2012), eq. in section 3."""
    sr = r.mean() / r.std(ddof=1)
    g3 = stats.skew(r)
    g4 = stats.kurtosis(r, fisher=False)
    z = (sr - sr_star) * math.sqrt(r.size - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return float(stats.norm.cdf(z))


def test_psr_matches_the_formula(run: dict) -> None:
    r = run["returns"]
    assert m.probabilistic_sharpe_ratio(r) == pytest.approx(_psr_reference(r, 0.0))
    assert m.probabilistic_sharpe_ratio(r, 0.05) == pytest.approx(_psr_reference(r, 0.05))
    assert 0.0 <= m.probabilistic_sharpe_ratio(r) <= 1.0


def test_dsr_reproduces_the_published_example() -> None:
    # Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", numerical example:
    # annualised SR 2.5 over 1250 daily bars, 100 trials with annualised Sharpe variance 1/2,
    # skewness -3, kurtosis 10 -> SR0 = 0.1132 per bar and DSR = 0.9004.
    sr0 = m.expected_max_sharpe(0.5 / 250, 100)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = m.deflated_sharpe_ratio_from_moments(
        2.5 / math.sqrt(250), 0.5 / 250, 100, 1250, -3.0, 10.0
    )
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_dsr_of_a_trial_matrix_deflates_the_winner() -> None:
    rng = np.random.default_rng(3)
    trials = rng.normal(0.0, 0.01, (200, 1000))  # no skill anywhere
    dsr = m.deflated_sharpe_ratio(trials)
    best = int(np.argmax(trials.mean(axis=1) / trials.std(axis=1, ddof=1)))
    assert m.probabilistic_sharpe_ratio(trials[best]) > 0.95  # looks significant alone
    assert 0.0 <= dsr < 0.5  # and is not, once 200 trials are counted


def _pbo_reference(trials: np.ndarray, s: int) -> float:
    """CSCV written plainly with pandas (Bailey, Borwein, Lopez de Prado & Zhu, 2017)."""
    k, n = trials.shape
    size = n // s
    frame = pd.DataFrame(trials[:, n - size * s :].T)
    block = np.repeat(np.arange(s), size)
    below = 0
    total = 0
    for chosen in combinations(range(s), s // 2):
        mask = np.isin(block, chosen)
        ins, oos = frame[mask], frame[~mask]
        best = (ins.mean() / ins.std(ddof=1)).idxmax()
        oos_sr = oos.mean() / oos.std(ddof=1)
        w = oos_sr.rank()[best] / (k + 1)
        below += math.log(w / (1 - w)) <= 0
        total += 1
    return below / total


def test_pbo_matches_a_plain_cscv_and_reads_right() -> None:
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, 0.01, (12, 480))
    pbo, logits = m.probability_of_backtest_overfitting(noise, n_splits=8)
    assert pbo == pytest.approx(_pbo_reference(noise, 8))
    assert logits.size == math.comb(8, 4)
    assert 0.2 < pbo < 0.8  # no skill: the in-sample winner is a coin toss out of sample
    skilled = noise.copy()
    skilled[5] += 0.004  # one trial with a real edge, everywhere
    pbo_skill, _ = m.probability_of_backtest_overfitting(skilled, n_splits=8)
    assert pbo_skill == pytest.approx(_pbo_reference(skilled, 8))
    assert pbo_skill < 0.05


def test_compute_metrics_is_complete_and_in_range(run: dict) -> None:
    res = run["res"]
    out = m.compute_metrics(
        res.equity,
        100_000,
        years=m.calendar_years(run["df"].index.to_numpy()),
        periods_per_year=PPY,
        risk_free_rate=RF,
        trade_pnls=res.trade_pnls,
        exposure=res.exposure,
        benchmark_equity=run["bench_equity"],
    ).as_dict()
    assert out["final_capital"] == res.final_capital
    for key in ("win_rate", "exposure", "p_value", "probabilistic_sharpe_ratio"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["max_drawdown"] < 0
    assert out["max_drawdown_duration"] > 0
    assert out["periods_per_year"] == 252.0
