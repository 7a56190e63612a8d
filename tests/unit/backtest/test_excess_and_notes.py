"""The t-test and the bootstrap interval test excess returns, as Sharpe and PSR do; the seed
hypotheses note checks all four criteria and says when the run is too short."""

from __future__ import annotations

import numpy as np
import pytest

from services.backtest import metrics as m
from services.backtest.reports import metrics_model, seed_hypotheses_note

RF, PPY = 0.05, 252.0


def test_t_test_and_interval_agree_in_sign_with_sharpe_over_the_risk_free_rate() -> None:
    rng = np.random.default_rng(8)
    # a mean bar return well above zero but below the risk-free rate's 0.0198% a bar
    r = rng.normal(0.0001, 0.0004, 3000)
    r += 0.0001 - r.mean()
    equity = 10_000 * np.cumprod(1 + r)
    perf = m.compute_metrics(equity, 10_000, years=12.0, periods_per_year=PPY, risk_free_rate=RF)
    excess = r - RF / PPY
    assert perf.sharpe_ratio < 0 and perf.probabilistic_sharpe_ratio < 0.5
    assert perf.t_statistic < 0  # the raw mean's t would be about +14
    assert perf.t_statistic == pytest.approx(m.t_test(excess)[0])
    assert perf.p_value < 0.05  # significantly BELOW the risk-free rate
    lo, hi = perf.mean_return_ci
    assert lo < excess.mean() < hi < 0
    assert (lo, hi) == pytest.approx(m.bootstrap_mean_ci(excess, n_boot=1000), rel=1e-9)


def _metrics(**changes: float | None):  # type: ignore[no-untyped-def]
    r = np.random.default_rng(1).normal(0.001, 0.01, 1500)
    perf = m.compute_metrics(10_000 * np.cumprod(1 + r), 10_000, years=6.0, n_bootstrap=0)
    return metrics_model(perf).model_copy(update=changes)


def test_the_seed_note_checks_all_four_criteria() -> None:
    good = {"sharpe_ratio": 2.0, "win_rate": 0.65, "p_value": 0.01}
    deep = seed_hypotheses_note(_metrics(**good, max_drawdown=-0.25), 6.0)
    assert "max drawdown < 20%" in deep
    assert "3 of 4 hold here (not: max drawdown < 20%)." in deep
    shallow = seed_hypotheses_note(_metrics(**good, max_drawdown=-0.12), 6.0)
    assert "4 of 4 hold here." in shallow and "years" not in shallow
    poor = seed_hypotheses_note(
        _metrics(sharpe_ratio=0.4, win_rate=0.5, p_value=0.3, max_drawdown=-0.3), 6.0
    )
    assert "0 of 4 hold here" in poor


def test_the_seed_note_says_when_the_run_is_shorter_than_five_years() -> None:
    note = seed_hypotheses_note(_metrics(max_drawdown=-0.1), 3.8)
    assert "covers 3.8 years, shorter than the 5 years" in note
