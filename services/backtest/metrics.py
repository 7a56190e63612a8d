"""Performance metrics of a backtest, and the overfitting statistics of a parameter search.

Conventions (fractions, never percents):

* Returns are simple per-bar returns of the equity curve, the first one against the initial
  capital. ``periods_per_year`` comes from the bar interval (252 for daily bars).
* The risk-free rate is annual; its per-bar value is ``rate / periods_per_year``.
* Sharpe is the mean excess return over its sample standard deviation (ddof 1), times
  ``sqrt(periods_per_year)``; Sortino divides the annualised mean excess return by the
  annualised root mean square of the negative excess returns (empyrical's definitions).
* The annualised return is geometric over the number of bars; CAGR uses calendar time.
* Drawdowns are measured on the equity curve with the initial capital in front: the maximum
  drawdown is the worst (most negative) fraction; durations are in bars from the peak to the
  recovery (or to the end).
* Alpha and beta regress excess returns on the benchmark's excess returns (empyrical's).
* The t-test, the bootstrap interval of the mean, Sharpe, Sortino and PSR all use excess
  returns (the bar return less the per-bar risk-free rate): their signs agree.
* PSR / DSR use per-bar (not annualised) Sharpe ratios, population skewness and (non-excess)
  kurtosis, as Bailey & Lopez de Prado write them. PBO is estimated by combinatorially
  symmetric cross-validation (Bailey, Borwein, Lopez de Prado & Zhu).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
from scipy import special

from services.backtest.engine.stats import (
    bootstrap_means_nb,
    cscv_logits_nb,
    drawdown_episodes_nb,
)

EULER_GAMMA = 0.5772156649015329


def returns_from_equity(equity: np.ndarray, initial_capital: float) -> np.ndarray:
    """Return per-bar simple returns, the first against ``initial_capital``."""
    eq = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate(([initial_capital], eq[:-1]))
    # a wiped-out account (equity 0) earns 0 from then on
    return np.divide(eq, prev, out=np.ones_like(prev), where=prev > 0) - 1.0


def total_return(equity: np.ndarray, initial_capital: float) -> float:
    """Return the final equity over the initial capital, less one."""
    return float(equity[-1] / initial_capital - 1.0)


def cagr(equity: np.ndarray, initial_capital: float, years: float) -> float:
    """Return the compound annual growth rate over ``years`` of calendar time."""
    if years <= 0:
        return float("nan")
    growth = equity[-1] / initial_capital
    return float(growth ** (1.0 / years) - 1.0) if growth > 0 else -1.0


def annualized_return(returns: np.ndarray, periods_per_year: float) -> float:
    """Return the geometric mean return per year implied by the bars (empyrical's)."""
    growth = float(np.prod(1.0 + returns))
    if growth <= 0:
        return -1.0
    return growth ** (periods_per_year / returns.shape[0]) - 1.0


def annualized_volatility(returns: np.ndarray, periods_per_year: float) -> float:
    """Return the sample standard deviation of returns, annualised."""
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(returns: np.ndarray, risk_free_rate: float, periods_per_year: float) -> float:
    """Return the annualised Sharpe ratio of returns over the risk-free rate (sample std)."""
    x = returns - risk_free_rate / periods_per_year
    sd = np.std(x, ddof=1) if np.ptp(x) > 0 else 0.0  # constant: no risk, not 1e-19
    return float(np.mean(x) / sd * math.sqrt(periods_per_year)) if sd > 0 else float("nan")


def sortino_ratio(returns: np.ndarray, risk_free_rate: float, periods_per_year: float) -> float:
    """Return the annualised Sortino ratio (downside deviation below the risk-free rate)."""
    x = returns - risk_free_rate / periods_per_year
    downside = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    if downside == 0:
        return float("nan")
    return float(np.mean(x) * periods_per_year / (downside * math.sqrt(periods_per_year)))


@dataclass(frozen=True)
class Drawdowns:
    """Drawdown statistics of an equity curve."""

    max_drawdown: float  # worst, negative fraction (0 if never below a peak)
    max_drawdown_duration: int  # bars from a peak to its recovery (or the end)
    avg_drawdown: float  # mean of each episode's worst depth (0 if none)
    n_episodes: int


def drawdowns(equity: np.ndarray, initial_capital: float) -> Drawdowns:
    """Return the drawdown statistics of ``equity`` with the initial capital in front."""
    eq = np.concatenate(([initial_capital], np.asarray(equity, dtype=np.float64)))
    dd, longest, depths = drawdown_episodes_nb(eq)
    return Drawdowns(
        max_drawdown=float(dd.min()),
        max_drawdown_duration=int(longest),
        avg_drawdown=float(np.mean(depths)) if depths.size else 0.0,
        n_episodes=int(depths.size),
    )


def alpha_beta(
    returns: np.ndarray,
    benchmark_returns: np.ndarray,
    risk_free_rate: float,
    periods_per_year: float,
) -> tuple[float, float]:
    """Return (annualised alpha, beta) of returns against a benchmark (empyrical's)."""
    rf = risk_free_rate / periods_per_year
    y = returns - rf
    x = benchmark_returns - rf
    xc = x - x.mean()
    var = float(np.mean(xc * xc))
    if var == 0 or np.ptp(x) == 0:  # a flat benchmark: float noise is no variance
        return float("nan"), float("nan")
    beta = float(np.mean(xc * y) / var)
    alpha = float((1.0 + np.mean(y - beta * x)) ** periods_per_year - 1.0)
    return alpha, beta


def t_test(returns: np.ndarray) -> tuple[float, float]:
    """Return (t statistic, two-sided p-value) of the mean return being zero."""
    n = returns.shape[0]
    sd = np.std(returns, ddof=1)
    if n < 2 or sd == 0:
        return float("nan"), float("nan")
    t = float(np.mean(returns) / (sd / math.sqrt(n)))
    return t, float(2.0 * special.stdtr(n - 1, -abs(t)))


def bootstrap_mean_ci(
    returns: np.ndarray, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Return a percentile bootstrap confidence interval of the mean return.

    ``n_boot`` resamples of the returns drawn with replacement (``stats.bootstrap_means_nb``:
    one SplitMix64 stream per resample, so a seed gives one answer everywhere).
    """
    x = np.ascontiguousarray(returns, dtype=np.float64)
    means = bootstrap_means_nb(x, n_boot, seed)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Return (per-bar Sharpe with sample std, population skewness, non-excess kurtosis).

    Skewness m3 / m2**1.5 and kurtosis m4 / m2**2 from the central moments (scipy.stats'
    ``skew`` and ``kurtosis(fisher=False)``, without their per-call overhead).
    """
    sd = np.std(returns, ddof=1) if np.ptp(returns) > 0 else 0.0
    if not sd > 0:
        return 0.0, 0.0, 3.0
    d = returns - returns.mean()
    d2 = d * d
    m2 = float(d2.mean())
    skew = float((d2 * d).mean()) / m2**1.5
    kurt = float((d2 * d2).mean()) / (m2 * m2)
    return float(np.mean(returns) / sd), skew, kurt


def psr_from_moments(sr: float, benchmark: float, n: int, skew: float, kurt: float) -> float:
    """Return the Probabilistic Sharpe Ratio from per-bar moments (Bailey & Lopez de Prado)."""
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if n < 2 or denom <= 0:
        return float("nan")
    return float(special.ndtr((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(denom)))


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sr: float = 0.0) -> float:
    """Return P(true per-bar Sharpe > ``benchmark_sr``) given these returns (PSR)."""
    sr, skew, kurt = _moments(returns)
    return psr_from_moments(sr, benchmark_sr, returns.shape[0], skew, kurt)


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float:
    """Return the expected maximum per-bar Sharpe of ``n_trials`` skill-less trials (SR0)."""
    if n_trials < 2:
        return 0.0
    z1 = special.ndtri(1.0 - 1.0 / n_trials)
    z2 = special.ndtri(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe_ratio_from_moments(
    sr: float, sr_variance: float, n_trials: int, n: int, skew: float, kurt: float
) -> float:
    """Return the DSR: the PSR of ``sr`` against the expected maximum of the trials' Sharpe."""
    return psr_from_moments(sr, expected_max_sharpe(sr_variance, n_trials), n, skew, kurt)


def deflated_sharpe_ratio(trial_returns: np.ndarray, selected: int | None = None) -> float:
    """Return the Deflated Sharpe Ratio of the selected trial (default: best Sharpe).

    ``trial_returns`` is (n_trials, n_bars): every trial that was tried, not only the winner.
    """
    r = np.asarray(trial_returns, dtype=np.float64)
    sd = r.std(axis=1, ddof=1)
    srs = np.divide(r.mean(axis=1), sd, out=np.zeros(r.shape[0]), where=sd > 0)
    k = int(np.argmax(srs)) if selected is None else selected
    return deflated_sharpe_ratio_of_trials(srs, r[k])


def sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    """Return per-bar Sharpe ratios (sample std) from sums of returns and of their squares."""
    return _block_sharpe(
        np.asarray(s1, dtype=np.float64), np.asarray(s2, dtype=np.float64), np.full(len(s1), n)
    )


def deflated_sharpe_ratio_of_trials(
    trial_sharpes: np.ndarray, selected_returns: np.ndarray
) -> float:
    """Return the DSR of one trial given every trial's per-bar Sharpe and that trial's returns.

    The expected maximum comes from the variance of ``trial_sharpes`` over the trials; the
    selected trial's own Sharpe, skewness and kurtosis from ``selected_returns``.
    """
    srs = np.asarray(trial_sharpes, dtype=np.float64)
    sr, skew, kurt = _moments(np.asarray(selected_returns, dtype=np.float64))
    var = float(np.var(srs, ddof=1)) if srs.shape[0] > 1 else 0.0
    n = int(np.asarray(selected_returns).shape[0])
    return deflated_sharpe_ratio_from_moments(sr, var, srs.shape[0], n, skew, kurt)


def _block_sharpe(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Return per-trial Sharpe ratios from summed returns, squares and counts."""
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)


def probability_of_backtest_overfitting(
    trial_returns: np.ndarray, n_splits: int = 16
) -> tuple[float, np.ndarray]:
    """Return (PBO, logits) by CSCV over ``n_splits`` blocks of bars, ranking by Sharpe.

    Each of the C(S, S/2) splits picks the trial with the best in-sample Sharpe and ranks it
    out of sample; PBO is the share of splits where it lands at or below the median
    (logit <= 0). ``trial_returns`` is (n_trials, n_bars); leading bars that do not fill the
    last block are dropped.
    """
    r = np.asarray(trial_returns, dtype=np.float64)
    k, n = r.shape
    _check_cscv(k, n, n_splits)
    size = n // n_splits
    blocks = r[:, n - size * n_splits :].reshape(k, n_splits, size)
    return pbo_from_blocks(blocks.sum(axis=2), (blocks * blocks).sum(axis=2), size)


def _check_cscv(k: int, n: int, n_splits: int) -> None:
    """Raise ValueError unless k trials of n bars can be cut into n_splits CSCV blocks."""
    if n_splits < 2 or n_splits % 2:
        raise ValueError("n_splits: an even number >= 2")
    if k < 2:
        raise ValueError("trial_returns: at least two trials")
    if n // n_splits < 2:
        raise ValueError("trial_returns: too few bars for the number of splits")


CSCV_CHUNK_UNITS = 20_000_000  # splits x trials between two `between_chunks` calls


def pbo_from_blocks(
    b1: np.ndarray,
    b2: np.ndarray,
    size: int,
    between_chunks: Callable[[], None] | None = None,
) -> tuple[float, np.ndarray]:
    """Return (PBO, logits) by CSCV from each trial's sums over S blocks of ``size`` bars.

    ``b1`` and ``b2`` (n_trials, S) are the sums of the returns and of their squares in each
    block (``probability_of_backtest_overfitting`` cuts them from a returns matrix; a sweep
    leaves them without one). The splits are evaluated in chunks of about
    ``CSCV_CHUNK_UNITS`` split-trials; ``between_chunks`` is called before each (a job's
    cancellation check: it raises to stop).
    """
    s1 = np.ascontiguousarray(b1, dtype=np.float64)
    s2 = np.ascontiguousarray(b2, dtype=np.float64)
    k, n_splits = s1.shape
    _check_cscv(k, size * n_splits, n_splits)
    splits = np.array(list(combinations(range(n_splits), n_splits // 2)), dtype=np.int64)
    b1t, b2t = np.ascontiguousarray(s1.T), np.ascontiguousarray(s2.T)
    t1, t2 = s1.sum(axis=1), s2.sum(axis=1)
    c = splits.shape[0]  # even: split c - 1 - i is the complement of split i
    step = max(1, CSCV_CHUNK_UNITS // max(1, 2 * k))
    logits = np.empty(c)
    for a in range(0, c // 2, step):
        if between_chunks is not None:
            between_chunks()
        b = min(a + step, c // 2)
        # the kernel pairs a split with its complement from the two ends of what it is given
        part = cscv_logits_nb(
            b1t, b2t, t1, t2, np.concatenate([splits[a:b], splits[c - b : c - a]]), size
        )
        logits[a:b] = part[: b - a]
        logits[c - b : c - a] = part[b - a :]
    return float(np.mean(logits <= 0.0)), logits


@dataclass(frozen=True)
class TradeStats:
    """Statistics of closed round trips."""

    total_trades: int
    win_rate: float
    profit_factor: float  # gross profit / gross loss; inf without losses, nan without trades
    expectancy: float  # mean pnl per trade, in cash


def trade_stats(pnls: np.ndarray) -> TradeStats:
    """Return win rate, profit factor and expectancy of the trades' realised pnl."""
    p = np.asarray(pnls, dtype=np.float64)
    if p.size == 0:
        return TradeStats(0, float("nan"), float("nan"), float("nan"))
    gain = float(p[p > 0].sum())
    loss = float(-p[p < 0].sum())
    pf = gain / loss if loss > 0 else (float("inf") if gain > 0 else float("nan"))
    return TradeStats(int(p.size), float(np.mean(p > 0)), pf, float(p.mean()))


@dataclass(frozen=True)
class PerformanceMetrics:
    """Every metric of one backtest (fractions, not percents)."""

    final_capital: float
    total_return: float
    cagr: float
    annualized_return: float
    annualized_volatility: float
    periods_per_year: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration: int
    avg_drawdown: float
    exposure: float
    total_trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    alpha: float
    beta: float
    t_statistic: float
    p_value: float
    mean_return_ci: tuple[float, float]
    probabilistic_sharpe_ratio: float

    def as_dict(self) -> dict[str, object]:
        """Return the metrics as a plain dict."""
        return asdict(self)


def compute_metrics(
    equity: np.ndarray,
    initial_capital: float,
    *,
    years: float,
    periods_per_year: float = 252.0,
    risk_free_rate: float = 0.0,
    trade_pnls: np.ndarray | None = None,
    exposure: float = float("nan"),
    benchmark_equity: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PerformanceMetrics:
    """Return every metric of an equity curve (and its trades, against its benchmark).

    ``n_bootstrap`` 0 leaves the mean's confidence interval NaN (for a caller that draws it
    with ``bootstrap_mean_ci`` itself, e.g. while it stores the rest).
    """
    eq = np.asarray(equity, dtype=np.float64)
    r = returns_from_equity(eq, initial_capital)
    ann = annualized_return(r, periods_per_year)
    dd = drawdowns(eq, initial_capital)
    ts = trade_stats(np.empty(0) if trade_pnls is None else trade_pnls)
    if benchmark_equity is not None:
        bench = returns_from_equity(np.asarray(benchmark_equity, dtype=np.float64), initial_capital)
        alpha, beta = alpha_beta(r, bench, risk_free_rate, periods_per_year)
    else:
        alpha = beta = float("nan")
    excess = r - risk_free_rate / periods_per_year
    t, p = t_test(excess)  # like Sharpe and PSR: the mean EXCESS return against zero
    return PerformanceMetrics(
        final_capital=float(eq[-1]),
        total_return=total_return(eq, initial_capital),
        cagr=cagr(eq, initial_capital, years),
        annualized_return=ann,
        annualized_volatility=annualized_volatility(r, periods_per_year),
        periods_per_year=periods_per_year,
        sharpe_ratio=sharpe_ratio(r, risk_free_rate, periods_per_year),
        sortino_ratio=sortino_ratio(r, risk_free_rate, periods_per_year),
        calmar_ratio=ann / abs(dd.max_drawdown) if dd.max_drawdown < 0 else float("nan"),
        max_drawdown=dd.max_drawdown,
        max_drawdown_duration=dd.max_drawdown_duration,
        avg_drawdown=dd.avg_drawdown,
        exposure=exposure,
        total_trades=ts.total_trades,
        win_rate=ts.win_rate,
        profit_factor=ts.profit_factor,
        expectancy=ts.expectancy,
        alpha=alpha,
        beta=beta,
        t_statistic=t,
        p_value=p,
        mean_return_ci=(
            bootstrap_mean_ci(excess, n_boot=n_bootstrap, confidence=confidence, seed=seed)
            if n_bootstrap > 0
            else (float("nan"), float("nan"))
        ),
        probabilistic_sharpe_ratio=probabilistic_sharpe_ratio(excess),
    )


def calendar_years(index: np.ndarray) -> float:
    """Return the calendar years between the first and last timestamps (365.25-day years)."""
    ts = np.asarray(index, dtype="datetime64[ns]")
    days = (ts[-1] - ts[0]) / np.timedelta64(1, "D")
    return float(days / 365.25)
