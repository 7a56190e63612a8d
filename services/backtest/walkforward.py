"""Walk-forward analysis: fit in sample, trade out of sample, roll forward, stitch.

Windows are cut as the seed's `_create_windows` cuts the requested range's N bars: train
`[s, s + train)`, test `[s + train, s + train + test)`, `s` advancing by `test` while the test
window fits, so N bars give (N - train - test) // test + 1 windows and the test windows never
overlap. `anchored` keeps every train window starting at bar 0 (expanding).

In each window the strategy is fitted on the train bars (the `param_grid` combination best on
the objective, via the sweep kernels) and run on the test bars. The strategy sees the train
bars as history, so its indicators are warm and it starts the test window in the position
it holds then (decided from past bars only).

By default the test windows are traded as ONE continuous run over the out-of-sample bars, on
each window's targets in turn (``trade_continuously``): a position held at a window's end
stays open when the next window's parameters hold the same side (no forced exit, no round
trip of costs at the boundary); the per-window figures are that run's slices. With
``flat_at_boundary`` every test window is its own run: it starts flat, closes what is open
at its end, and the windows' returns are chained into one out-of-sample equity curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from services.backtest.config import atr_matrix, strategy_definition
from services.backtest.engine import core
from services.backtest.engine.core import SimSpec
from services.backtest.engine.runner import Bars, simulate
from services.backtest.grid import Params, SearchPlan
from services.backtest.metrics import (
    annualized_return,
    calendar_years,
    compute_metrics,
    drawdowns,
    sharpe_ratio,
)
from services.backtest.optimize import (
    Runner,
    TrialBatch,
    atr_period_of,
    metric_column,
    rank,
    run_batch,
)
from services.backtest.reports import (
    benchmark_config,
    benchmark_model,
    equity_curve,
    metrics_model,
)
from services.backtest.schemas import (
    InSample,
    OutOfSample,
    WalkForwardRequest,
    WalkForwardResult,
    WindowResult,
    finite,
)
from services.backtest.strategies import StrategyDef, build_targets
from shared.errors import ValidationProblemError


def create_windows(
    n: int, train: int, test: int, anchored: bool = False
) -> list[tuple[int, int, int, int]]:
    """Return (train_start, train_end, test_start, test_end) bar indices, ends exclusive."""
    windows = []
    start = 0
    while start + train + test <= n:
        train_end = start + train
        windows.append((0 if anchored else start, train_end, train_end, train_end + test))
        start += test
    return windows


def check_windows(n: int, request: WalkForwardRequest) -> list[tuple[int, int, int, int]]:
    """Return the windows of n bars, or a 422 naming the field that leaves none."""
    if request.warmup_period >= request.train_period:
        raise ValidationProblemError(
            f"warmup_period ({request.warmup_period}) must be below train_period "
            f"({request.train_period}): the in-sample fit would never trade",
            field="warmup_period",
        )
    windows = create_windows(n, request.train_period, request.test_period, request.anchored)
    if not windows:
        raise ValidationProblemError(
            f"{n} bars between start_date and end_date hold no window of train_period + "
            f"test_period = {request.train_period + request.test_period} bars; widen the dates "
            "or shorten the periods",
            field="train_period",
        )
    return windows


def _slice(bars: Bars, lo: int, hi: int) -> Bars:
    return Bars(
        open=bars.open[lo:hi],
        high=bars.high[lo:hi],
        low=bars.low[lo:hi],
        close=bars.close[lo:hi],
        index=bars.index[lo:hi],
        symbols=bars.symbols,
        volume=None if bars.volume is None else bars.volume[lo:hi],
    )


@dataclass(frozen=True)
class WindowTask:
    """One window's bars (train then test) and how to fit and trade them."""

    index: int
    bars: Bars  # train bars followed by test bars
    train: int  # bars of the train part
    strategy: str | StrategyDef
    fixed: dict[str, Any]
    combos: Sequence[Params]  # empty: no fitting, the fixed params
    spec_in: SimSpec
    spec_out: SimSpec
    risk_free_rate: float
    objective: str
    maximize: bool
    atr_period: int | None


@dataclass(frozen=True)
class WindowOutcome:
    """What one window produced."""

    index: int
    params: Params
    in_sample: InSample
    out_of_sample: OutOfSample
    returns: np.ndarray  # per test bar
    trade_pnls: np.ndarray
    trade_returns: np.ndarray
    exposed_bars: int
    test_targets: np.ndarray  # the targets it traded, one per test bar


def run_window(task: WindowTask) -> WindowOutcome:
    """Fit on the train bars, then trade the test bars with the fitted parameters."""
    train_bars = _slice(task.bars, 0, task.train)
    years_in = calendar_years(train_bars.index)
    fitted = run_batch(
        TrialBatch(
            bars=train_bars,
            strategy=task.strategy,
            fixed=task.fixed,
            combos=task.combos or [{}],
            spec=task.spec_in,
            risk_free_rate=task.risk_free_rate,
            keep_returns=False,
            atr_period=task.atr_period,
        )
    )
    values = metric_column(fitted.stats, task.objective, years_in)
    best = int(rank(values, task.maximize)[0])
    params: Params = dict(task.combos[best]) if task.combos else {}
    row = fitted.stats[best : best + 1]
    in_sample = InSample(
        objective=finite(float(values[best])),
        annualized_return=finite(float(metric_column(row, "annualized_return", years_in)[0])),
        sharpe_ratio=finite(float(metric_column(row, "sharpe_ratio", years_in)[0])),
    )
    targets = build_targets(task.strategy, {**task.fixed, **params}, task.bars)[:, 0]
    test_targets = targets[task.train :].copy()
    if np.isnan(test_targets[0]):  # enter the test window in the position held at its start
        held = targets[: task.train][~np.isnan(targets[: task.train])]
        if held.size:
            test_targets[0] = held[-1]
    return trade_test_window(
        task.index,
        task.bars,
        task.train,
        test_targets,
        task.spec_out,
        task.risk_free_rate,
        task.atr_period,
        params,
        in_sample,
    )


def trade_test_window(
    index: int,
    bars: Bars,
    train: int,
    test_targets: np.ndarray,
    spec_out: SimSpec,
    risk_free_rate: float,
    atr_period: int | None,
    params: Params,
    in_sample: InSample,
) -> WindowOutcome:
    """Trade a window's test bars (`bars` holds its train bars, then its test bars) on
    `test_targets` (one per test bar); the ATR's warm-up comes from the train bars."""
    test_bars = _slice(bars, train, bars.n_bars)
    atr = atr_matrix(bars, atr_period)[train:] if atr_period else None
    sim = simulate(test_bars, test_targets[:, None], spec_out, atr)
    r = sim.returns
    out = _out_of_sample(r, sim.equity, sim.initial_capital, sim.n_trades, risk_free_rate, spec_out)
    return WindowOutcome(
        index=index,
        params=params,
        in_sample=in_sample,
        out_of_sample=out,
        returns=r,
        trade_pnls=sim.trade_pnls,
        trade_returns=sim.trade_returns,
        exposed_bars=int(sim.counters[core.CNT_EXPOSED]),
        test_targets=np.asarray(test_targets, dtype=np.float64),
    )


def _out_of_sample(
    r: np.ndarray, equity: np.ndarray, start: float, trades: int, rf: float, spec: SimSpec
) -> OutOfSample:
    """Return a test window's figures from its bar returns and equity (``start`` before)."""
    return OutOfSample(
        total_return=finite(equity[-1] / start - 1.0),
        annualized_return=finite(annualized_return(r, spec.periods_per_year)),
        sharpe_ratio=finite(
            sharpe_ratio(r, rf, spec.periods_per_year) if r.size > 1 else float("nan")
        ),
        max_drawdown=finite(drawdowns(equity, start).max_drawdown),
        total_trades=trades,
    )


def trade_continuously(
    request: WalkForwardRequest,
    bars: Bars,
    spec: SimSpec,
    windows: list[tuple[int, int, int, int]],
    outcomes: list[WindowOutcome],
) -> list[WindowOutcome]:
    """Trade every window's targets as one run over the out-of-sample bars; return the
    outcomes with that run's slices (returns, trades closed in the window, figures).

    A window whose first target is NaN (its parameters held nothing in the train bars)
    starts with a flat wish, as it would alone.
    """
    spec_out = spec._replace(warmup=0)
    first, last = windows[0][2], windows[-1][3]
    parts = [o.test_targets.copy() for o in outcomes]
    for t in parts:
        if np.isnan(t[0]):
            t[0] = 0.0
    period = atr_period_of(request)
    atr = atr_matrix(bars, period)[first:last] if period else None
    sim = simulate(_slice(bars, first, last), np.concatenate(parts)[:, None], spec_out, atr)
    r = sim.returns
    before = np.concatenate(([sim.initial_capital], sim.equity))
    closing = ~np.isnan(sim.fills[:, core.LOG_PNL])
    close_bar = sim.fills[closing, core.LOG_BAR]
    pnls, trade_returns = sim.trade_pnls, sim.trade_returns
    exposed = np.any(sim.positions != 0, axis=1)
    out = []
    lo = 0
    for o in outcomes:
        hi = lo + o.test_targets.shape[0]
        here = (close_bar >= lo) & (close_bar < hi)
        figures = _out_of_sample(
            r[lo:hi],
            sim.equity[lo:hi],
            float(before[lo]),
            int(here.sum()),
            request.risk_free_rate,
            spec_out,
        )
        out.append(
            replace(
                o,
                out_of_sample=figures,
                returns=r[lo:hi],
                trade_pnls=pnls[here],
                trade_returns=trade_returns[here],
                exposed_bars=int(exposed[lo:hi].sum()),
            )
        )
        lo = hi
    return out


def _day(ts: np.datetime64) -> Any:
    return pd.Timestamp(ts).date()


def _reading(oos: float | None, ins: float | None, wfe: float | None, bench: float | None) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    text = (
        f"Out of sample the strategy made {pct(oos)} a year against {pct(ins)} in sample "
        f"and buy-and-hold's {pct(bench)}"
    )
    if wfe is None:
        return text + "; efficiency is undefined (in-sample return <= 0)."
    verdict = "carries over" if wfe >= 0.5 else "does not carry over"
    return text + f"; efficiency {wfe:.2f}: the in-sample fit {verdict} (0.5 is the usual bar)."


async def walk_forward(
    request: WalkForwardRequest,
    plan: SearchPlan | None,
    bars: Bars,
    bars_hash: str,
    spec: SimSpec,
    runner: Runner,
) -> WalkForwardResult:
    """Fit and test every window (a task each), then stitch the out-of-sample windows."""
    windows = check_windows(bars.n_bars, request)
    definition, params = strategy_definition(request.strategy)
    spec_out = spec._replace(warmup=0)
    atr_period = atr_period_of(request)
    tasks = [
        WindowTask(
            index=i,
            bars=_slice(bars, lo, test_end),
            train=train_end - lo,
            strategy=plan.definition if plan and plan.definition else definition,
            fixed=plan.fixed if plan else params.model_dump(),
            combos=plan.combos if plan else [],
            spec_in=spec,
            spec_out=spec_out,
            risk_free_rate=request.risk_free_rate,
            objective=request.objective,
            maximize=request.maximize,
            atr_period=atr_period,
        )
        for i, (lo, train_end, _, test_end) in enumerate(windows)
    ]
    outcomes = await runner.map(run_window, tasks, where="thread", what="windows")
    fixed = plan.fixed if plan else params.model_dump()
    return await runner.run(assemble, request, bars, bars_hash, spec, windows, outcomes, fixed)


def assemble(
    request: WalkForwardRequest,
    bars: Bars,
    bars_hash: str,
    spec: SimSpec,
    windows: list[tuple[int, int, int, int]],
    outcomes: list[WindowOutcome],
    fixed: dict[str, Any],
) -> WalkForwardResult:
    """Stitch the windows' out-of-sample returns into one equity curve and answer."""
    spec_out = spec._replace(warmup=0)
    first_test, last_test = windows[0][2], windows[-1][3]
    oos_bars = _slice(bars, first_test, last_test)
    if not request.flat_at_boundary:
        outcomes = trade_continuously(request, bars, spec, windows, outcomes)
    returns = np.concatenate([o.returns for o in outcomes])
    initial = spec.initial_capital
    equity = initial * np.cumprod(1.0 + returns)
    if request.flat_at_boundary:  # each window's pnl in cash of its own start
        starts = np.concatenate(([initial], equity))[
            np.cumsum([0] + [len(o.returns) for o in outcomes[:-1]])
        ]
        pnls = np.concatenate(
            [o.trade_pnls * (s / initial) for o, s in zip(outcomes, starts, strict=True)]
        )
    else:  # one run: its pnl is already in cash of the chained equity
        pnls = np.concatenate([o.trade_pnls for o in outcomes])
    bench = simulate_benchmark(request, oos_bars, spec_out)
    years = calendar_years(oos_bars.index)
    ppy = spec.periods_per_year
    with np.errstate(all="ignore"):  # degenerate inputs give null metrics, not warnings
        perf = compute_metrics(
            equity,
            initial,
            years=years,
            periods_per_year=ppy,
            risk_free_rate=request.risk_free_rate,
            trade_pnls=pnls,
            exposure=sum(o.exposed_bars for o in outcomes) / max(1, returns.size),
            benchmark_equity=bench,
        )
    benchmark = benchmark_model(
        bench, initial, years=years, periods_per_year=ppy, risk_free_rate=request.risk_free_rate
    )
    metrics = metrics_model(perf)
    ins = [o.in_sample.annualized_return for o in outcomes]
    ins_known = [x for x in ins if x is not None]
    in_mean = float(np.mean(ins_known)) if ins_known else None
    oos_ann = metrics.annualized_return
    wfe = oos_ann / in_mean if oos_ann is not None and in_mean and in_mean > 0 else None
    result_windows = [
        WindowResult(
            index=o.index,
            train_start=_day(bars.index[lo]),
            train_end=_day(bars.index[train_end - 1]),
            test_start=_day(bars.index[test_start]),
            test_end=_day(bars.index[test_end - 1]),
            params={**_numbers(fixed), **o.params},
            in_sample=o.in_sample,
            out_of_sample=o.out_of_sample,
        )
        for o, (lo, train_end, test_start, test_end) in zip(outcomes, windows, strict=True)
    ]
    return WalkForwardResult(
        strategy=request.strategy.label,
        symbol=bars.symbols[0],
        bars=bars.n_bars,
        bars_hash=bars_hash,
        anchored=request.anchored,
        train_period=request.train_period,
        test_period=request.test_period,
        objective=request.objective,
        n_windows=len(windows),
        windows=result_windows,
        metrics=metrics,
        benchmark=benchmark,
        equity=equity_curve(
            oos_bars.index.astype("datetime64[D]"), equity, bench, request.equity_points
        ),
        in_sample_annualized_return=finite(in_mean),
        out_of_sample_annualized_return=oos_ann,
        walk_forward_efficiency=finite(wfe),
        reading=_reading(oos_ann, in_mean, finite(wfe), benchmark.annualized_return),
    )


def simulate_benchmark(request: WalkForwardRequest, bars: Bars, spec: SimSpec) -> np.ndarray:
    """Return buy-and-hold's equity on the out-of-sample bars (same costs, no warm-up)."""
    twin = benchmark_config(request)
    return simulate(bars, np.ones_like(bars.close), twin.to_spec()._replace(warmup=0)).equity


def _numbers(fixed: dict[str, Any]) -> Params:
    return {k: v for k, v in fixed.items() if isinstance(v, int | float | bool)}
