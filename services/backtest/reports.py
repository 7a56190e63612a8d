"""From a simulation to the answer's parts: metrics, benchmark, trades summary, equity, notes.

Pure functions (numpy and the engine in, schema models out), run off the event loop.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import numpy as np

from services.backtest.config import BacktestConfig, BuyAndHoldStrategy, simulate_config
from services.backtest.engine import core
from services.backtest.engine.runner import REASONS, Bars, SimulationResult
from services.backtest.metrics import (
    PerformanceMetrics,
    annualized_return,
    annualized_volatility,
    bootstrap_mean_ci,
    cagr,
    calendar_years,
    compute_metrics,
    drawdowns,
    returns_from_equity,
    sharpe_ratio,
    sortino_ratio,
    total_return,
)
from services.backtest.schemas import (
    Benchmark,
    EquityCurve,
    Metrics,
    TradesSummary,
    finite,
)
from services.backtest.strategies import SignalProvider
from shared.execution import AllIn

# Seed's success criteria: hypotheses to test, stated beside the result (never targets).
SEED_SHARPE, SEED_WIN_RATE, SEED_P = 1.5, 0.6, 0.05
SEED_MAX_DRAWDOWN = 0.20  # the seed's hypotheses: max drawdown < 20% ...
SEED_YEARS = 5.0  # ... over at least five years of bars


@dataclass(frozen=True)
class Evaluation:
    """One simulated backtest with everything its answer and its stored row need."""

    sim: SimulationResult
    benchmark_equity: np.ndarray
    dates: np.ndarray  # datetime64[D], one per bar
    metrics: Metrics
    benchmark: Benchmark
    trades: TradesSummary
    notes: list[str]
    fills: dict[str, list[Any]]  # the fills as `backtest_trades` columns (fill_columns)


def metrics_model(perf: PerformanceMetrics, sim: SimulationResult | None = None) -> Metrics:
    """Return the answer's metrics (NaN and infinity become null)."""
    lo, hi = perf.mean_return_ci
    return Metrics(
        final_capital=float(perf.final_capital),
        total_return=finite(perf.total_return),
        cagr=finite(perf.cagr),
        annualized_return=finite(perf.annualized_return),
        annualized_volatility=finite(perf.annualized_volatility),
        periods_per_year=float(perf.periods_per_year),
        sharpe_ratio=finite(perf.sharpe_ratio),
        sortino_ratio=finite(perf.sortino_ratio),
        calmar_ratio=finite(perf.calmar_ratio),
        max_drawdown=finite(perf.max_drawdown),
        max_drawdown_duration=int(perf.max_drawdown_duration),
        avg_drawdown=finite(perf.avg_drawdown),
        exposure=finite(perf.exposure),
        total_trades=int(perf.total_trades),
        win_rate=finite(perf.win_rate),
        profit_factor=finite(perf.profit_factor),
        expectancy=finite(perf.expectancy),
        alpha=finite(perf.alpha),
        beta=finite(perf.beta),
        t_statistic=finite(perf.t_statistic),
        p_value=finite(perf.p_value),
        mean_return_ci=[finite(lo), finite(hi)],
        probabilistic_sharpe_ratio=finite(perf.probabilistic_sharpe_ratio),
        rejected_orders=sim.n_rejected if sim is not None else 0,
        resized_orders=sim.n_resized if sim is not None else 0,
    )


def benchmark_model(
    equity: np.ndarray,
    initial_capital: float,
    *,
    years: float,
    periods_per_year: float,
    risk_free_rate: float,
) -> Benchmark:
    """Return the headline metrics of a buy-and-hold equity curve."""
    r = returns_from_equity(equity, initial_capital)
    return Benchmark(
        final_capital=float(equity[-1]),
        total_return=finite(total_return(equity, initial_capital)),
        cagr=finite(cagr(equity, initial_capital, years)),
        annualized_return=finite(annualized_return(r, periods_per_year)),
        annualized_volatility=finite(annualized_volatility(r, periods_per_year)),
        sharpe_ratio=finite(sharpe_ratio(r, risk_free_rate, periods_per_year)),
        sortino_ratio=finite(sortino_ratio(r, risk_free_rate, periods_per_year)),
        max_drawdown=finite(drawdowns(equity, initial_capital).max_drawdown),
    )


def benchmark_config(config: BacktestConfig) -> BacktestConfig:
    """Return the buy-and-hold twin of a config: same bars, costs and warm-up, no stops."""
    return config.model_copy(
        update={
            "strategy": BuyAndHoldStrategy.model_validate({"name": "buy_and_hold"}),
            "position_size": AllIn(method="all_in"),
            "stop_loss": None,
            "take_profit": None,
            "max_positions": len(config.symbol_list),
        }
    )


def trades_summary(sim: SimulationResult) -> TradesSummary:
    """Return what the fills add up to."""
    f = sim.fills
    closing = ~np.isnan(f[:, core.LOG_PNL])
    pnl = f[closing, core.LOG_PNL]
    rets = f[closing, core.LOG_TRADE_RETURN]
    gain = float(pnl[pnl > 0].sum())
    loss = float(-pnl[pnl < 0].sum())
    return TradesSummary(
        fills=int(f.shape[0]),
        round_trips=int(pnl.size),
        winning=int((pnl > 0).sum()),
        losing=int((pnl < 0).sum()),
        win_rate=finite(float((pnl > 0).mean())) if len(pnl) else None,
        profit_factor=finite(gain / loss) if loss > 0 else None,
        expectancy=finite(float(pnl.mean())) if len(pnl) else None,
        avg_trade_return=finite(float(rets.mean())) if len(rets) else None,
        best_trade_return=finite(float(rets.max())) if len(rets) else None,
        worst_trade_return=finite(float(rets.min())) if len(rets) else None,
        total_commission=float(f[:, core.LOG_COMMISSION].sum()),
        total_slippage=float(f[:, core.LOG_SLIPPAGE].sum()),
        exits=dict(Counter(REASONS[int(r)] for r in f[closing, core.LOG_REASON])),
        rejected_orders=sim.n_rejected,
        resized_orders=sim.n_resized,
    )


FILL_FIELDS = (
    "timestamp",
    "symbol",
    "direction",
    "shares",
    "price",
    "commission",
    "slippage_cost",
    "total_cost",
    "pnl",
    "portfolio_value",
    "reason",
    "trade_return",
)
_FILL_NUMBERS = (
    ("shares", core.LOG_SHARES),
    ("price", core.LOG_PRICE),
    ("commission", core.LOG_COMMISSION),
    ("slippage_cost", core.LOG_SLIPPAGE),
    ("total_cost", core.LOG_TOTAL_COST),
    ("pnl", core.LOG_PNL),
    ("portfolio_value", core.LOG_VALUE),
    ("trade_return", core.LOG_TRADE_RETURN),
)


def fill_columns(sim: SimulationResult, bars: Bars) -> dict[str, list[Any]]:
    """Return the fills as `backtest_trades` columns (name -> values in fill order): UTC
    timestamps, NaN as None.

    Built column by column from the fill log (no frame, no dict per fill): a few hundred
    fills in a fraction of a millisecond.
    """
    f = sim.fills
    bar = f[:, core.LOG_BAR].astype(np.int64)
    days = np.asarray(bars.index, dtype="datetime64[ns]")[bar].astype("datetime64[us]").tolist()
    columns: dict[str, list[Any]] = {
        "timestamp": [d.replace(tzinfo=UTC) for d in days],
        "symbol": [bars.symbols[j] for j in f[:, core.LOG_SYMBOL].astype(np.int64).tolist()],
        "direction": ["buy" if d > 0 else "sell" for d in f[:, core.LOG_DIRECTION].tolist()],
        "reason": [REASONS[int(r)] for r in f[:, core.LOG_REASON].tolist()],
    }
    for name, col in _FILL_NUMBERS:
        values = f[:, col]
        listed: list[Any] = values.tolist()
        if not np.isfinite(values).all():
            listed = [v if math.isfinite(v) else None for v in listed]
        columns[name] = listed
    return {name: columns[name] for name in FILL_FIELDS}


def fill_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Return fill columns as one dict per fill."""
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def downsample(n: int, points: int) -> np.ndarray:
    """Return at most `points` evenly spaced indices of 0..n-1, first and last included."""
    if n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(np.int64))


def equity_curve(
    dates: np.ndarray, equity: np.ndarray, benchmark: np.ndarray, points: int
) -> EquityCurve:
    """Return the equity and benchmark at (at most) `points` bar dates."""
    idx = downsample(len(dates), points)
    return EquityCurve(
        timestamps=np.asarray(dates, dtype="datetime64[D]")[idx].tolist(),
        equity=np.asarray(equity, dtype=np.float64)[idx].tolist(),
        benchmark=np.asarray(benchmark, dtype=np.float64)[idx].tolist(),
        points=len(idx),
        total_points=len(dates),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def reading_notes(metrics: Metrics, benchmark: Benchmark, years: float) -> list[str]:
    """Return the plain-language caveats of a result (what a careful reader checks first).

    ``years``: the calendar length of the run (the seed's hypotheses ask for five).
    """
    notes = [
        f"Total return {_pct(metrics.total_return)} (Sharpe {_num(metrics.sharpe_ratio)}, "
        f"max drawdown {_pct(metrics.max_drawdown)}) against buy-and-hold's "
        f"{_pct(benchmark.total_return)} (Sharpe {_num(benchmark.sharpe_ratio)}, max drawdown "
        f"{_pct(benchmark.max_drawdown)}) on the same bars and costs."
    ]
    p = metrics.p_value
    if p is None:
        notes.append("The mean excess bar return has no variance to test.")
    elif p >= SEED_P:
        notes.append(
            "The mean excess bar return (over the risk-free rate) is not distinguishable from "
            f"zero (t-test p = {p:.2f})."
        )
    else:
        notes.append(
            f"The mean excess bar return differs from zero (t-test p = {p:.3f}) for this one "
            "configuration; a search over many configurations needs /optimize's deflated "
            "Sharpe ratio instead."
        )
    if metrics.total_trades < 30:
        notes.append(
            f"Only {metrics.total_trades} closed trade(s): win rate, profit factor and "
            "expectancy are noisy."
        )
    if metrics.rejected_orders:
        notes.append(f"{metrics.rejected_orders} order(s) were rejected (cash or max_positions).")
    notes.append(seed_hypotheses_note(metrics, years))
    return notes


def seed_hypotheses_note(metrics: Metrics, years: float) -> str:
    """Return which of the seed's four hypotheses a run meets, and whether it is long enough.

    Sharpe > 1.5, win rate > 60%, max drawdown < 20% (shallower than -20%), t-test p < 0.05;
    a run shorter than five calendar years is said to be too short to test them.
    """
    p = metrics.p_value
    dd = metrics.max_drawdown
    checks = [
        (f"Sharpe > {SEED_SHARPE}", (metrics.sharpe_ratio or 0.0) > SEED_SHARPE),
        (f"win rate > {SEED_WIN_RATE:.0%}", (metrics.win_rate or 0.0) > SEED_WIN_RATE),
        (f"max drawdown < {SEED_MAX_DRAWDOWN:.0%}", dd is not None and -dd < SEED_MAX_DRAWDOWN),
        (f"p < {SEED_P}", p is not None and p < SEED_P),
    ]
    held = [name for name, ok in checks if ok]
    failed = [name for name, ok in checks if not ok]
    text = (
        f"Seed hypotheses (Sharpe > {SEED_SHARPE}, win rate > {SEED_WIN_RATE:.0%}, max drawdown "
        f"< {SEED_MAX_DRAWDOWN:.0%}, p < {SEED_P}): {len(held)} of {len(checks)} hold here"
        + (f" (not: {', '.join(failed)})." if failed else ".")
    )
    if years < SEED_YEARS:
        text += (
            f" The run covers {years:.1f} years, shorter than the {SEED_YEARS:.0f} years the "
            "hypotheses are to be tested on."
        )
    return text


@dataclass(frozen=True)
class BenchmarkRun:
    """Buy-and-hold on a config's bars and costs: its equity curve and headline metrics."""

    equity: np.ndarray
    summary: Benchmark


def run_benchmark(config: BacktestConfig, bars: Bars) -> BenchmarkRun:
    """Simulate the buy-and-hold twin of ``config`` on ``bars`` and summarise it."""
    bench = simulate_config(benchmark_config(config), bars)
    with np.errstate(all="ignore"):  # a flat benchmark gives null metrics
        summary = benchmark_model(
            bench.equity,
            bench.initial_capital,
            years=calendar_years(bars.index),
            periods_per_year=config.periods_per_year,
            risk_free_rate=config.risk_free_rate,
        )
    return BenchmarkRun(bench.equity, summary)


N_BOOTSTRAP = 1000  # resamples of the mean's confidence interval


def mean_ci(ev: Evaluation, risk_free_rate: float, periods_per_year: float) -> tuple[float, float]:
    """Return the bootstrap confidence interval of an evaluation's mean excess bar return."""
    r = returns_from_equity(ev.sim.equity, ev.sim.initial_capital)
    return bootstrap_mean_ci(r - risk_free_rate / periods_per_year, n_boot=N_BOOTSTRAP)


def with_mean_ci(ev: Evaluation, ci: tuple[float, float]) -> Evaluation:
    """Return the evaluation with its mean's confidence interval filled in."""
    metrics = ev.metrics.model_copy(update={"mean_return_ci": [finite(ci[0]), finite(ci[1])]})
    return replace(ev, metrics=metrics)


def evaluate(
    config: BacktestConfig,
    bars: Bars,
    signals: SignalProvider | None = None,
    benchmark: BenchmarkRun | None = None,
    *,
    bootstrap: bool = True,
) -> Evaluation:
    """Simulate config and its buy-and-hold benchmark on bars; compute every answer part.

    ``benchmark``: the buy-and-hold run when the caller has it already (it depends on the
    bars and the costs, not on the strategy). ``bootstrap`` False leaves the mean's
    confidence interval null, for ``with_mean_ci(ev, mean_ci(ev, rf, ppy))`` later (the service
    draws it while it stores the run).
    """
    sim = simulate_config(config, bars, signals)
    bench = benchmark or run_benchmark(config, bars)
    years = calendar_years(bars.index)
    ppy = config.periods_per_year
    with np.errstate(all="ignore"):  # degenerate inputs (a flat benchmark) give null metrics
        perf = compute_metrics(
            sim.equity,
            sim.initial_capital,
            years=years,
            periods_per_year=ppy,
            risk_free_rate=config.risk_free_rate,
            trade_pnls=sim.trade_pnls,
            exposure=sim.exposure,
            benchmark_equity=bench.equity,
            n_bootstrap=N_BOOTSTRAP if bootstrap else 0,
        )
    metrics = metrics_model(perf, sim)
    return Evaluation(
        sim=sim,
        benchmark_equity=bench.equity,
        dates=bars.index.astype("datetime64[D]"),
        metrics=metrics,
        benchmark=bench.summary,
        trades=trades_summary(sim),
        notes=reading_notes(metrics, bench.summary, years),
        fills=fill_columns(sim, bars),
    )
