"""Parameter search: batches of trials on the sweep kernels, ranking, and the overfitting
statistics of the winner (Deflated Sharpe Ratio, PBO by CSCV).

`grid.plan_search` turns a request into the combinations to try (422s name the field);
`run_batch` is the task a job maps over (module level: worker processes import it);
`optimize` runs a plan through a `Runner` (a `JobContext`, or `Inline` for short work).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from services.backtest.config import atr_matrix
from services.backtest.engine.analysis import (
    SweepResult,
    per_period_rate,
    sweep_crossover,
    sweep_targets,
)
from services.backtest.engine.core import SimSpec
from services.backtest.engine.fast import STAT_NAMES
from services.backtest.engine.runner import Bars
from services.backtest.grid import Combos, Params, SearchPlan
from services.backtest.overfit import (
    Deflation,
    deflate,
    pbo_excess,
    pbo_split_count,
    reading,
    sample_indices,
    trial_sharpes,
)
from services.backtest.schemas import (
    DeflatedSharpe,
    OptimizeRequest,
    OptimizeResult,
    Trial,
    finite,
)
from services.backtest.strategies import StrategyDef, build_targets, get_strategy
from shared.execution import VolatilityTarget
from shared.jobs import JobCancelledError, task_cancelled
from shared.jobs.tasks import run_with_channel

T = TypeVar("T")
R = TypeVar("R")

BATCH_TRIAL_BARS = 4_000_000  # trials x bars per task of a job: tens of ms between reports
# Numba's workqueue threading layer aborts on concurrent parallel calls; omp and tbb do not.
# One parallel sweep at a time per process (each one already uses every core).
_SWEEP_LOCK = threading.Lock()


class Runner(Protocol):
    """Where a search's tasks run: a job's `JobContext`, or `Inline` for short work."""

    async def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, where: Any = ..., what: str = ...
    ) -> list[R]:
        """Run fn(item) for every item; return the results in order."""
        ...

    async def run(self, fn: Callable[..., R], /, *args: Any, where: Any = ...) -> R:
        """Run fn(*args) as one task."""
        ...

    def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress."""
        ...


# Short work runs on one engine thread. Numba's OpenMP layer gives every thread that starts
# a parallel loop its own team of worker threads, which spin a while after each loop: spread
# over the default executor's threads, a few sweeps left several teams spinning against the
# event loop on a two-core machine. Sweeps take _SWEEP_LOCK anyway.
_ENGINE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backtest-engine")


async def on_engine_thread(fn: Callable[..., R], /, *args: Any) -> R:
    """Run fn(*args) on the engine thread (with the caller's context variables)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_ENGINE, call)


class _Flag:
    """A direct answer's cancel flag, read by its work as a job task reads its own."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def report(self, done: float, total: float | None, message: str | None) -> None:
        """Drop progress: nobody follows inline work."""

    def cancelled(self) -> bool:
        return self.event.is_set()


class Inline:
    """Run tasks one after another on the engine thread (short work answered directly).

    When the awaiting request is cancelled (its client went away, or its time limit
    passed), the work sees `task_cancelled()` turn True, as a cancelled job's tasks do, and
    stops at its next check (between batches, between CSCV chunks).
    """

    def __init__(self) -> None:
        self.flag = _Flag()

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        if self.flag.cancelled():
            raise JobCancelledError("The request was cancelled.")
        try:
            return await on_engine_thread(run_with_channel, self.flag, fn, args)
        except asyncio.CancelledError:
            self.flag.event.set()
            raise

    async def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, where: Any = "thread", what: str = ""
    ) -> list[R]:
        """Run fn(item) for every item on the engine thread; return the results in order."""
        return [await self._call(fn, item) for item in items]

    async def run(self, fn: Callable[..., R], /, *args: Any, where: Any = "thread") -> R:
        """Run fn(*args) on the engine thread."""
        return await self._call(fn, *args)

    def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Do nothing: nobody follows inline work."""


# ---- running trials -------------------------------------------------------------------


@dataclass(frozen=True)
class TrialBatch:
    """Trials of one strategy on one instrument's bars (a task of a search)."""

    bars: Bars
    strategy: str | StrategyDef
    fixed: dict[str, Any]
    combos: Sequence[Params]  # a plan's Combos, or dicts
    spec: SimSpec
    risk_free_rate: float
    keep_returns: bool
    atr_period: int | None = None
    n_blocks: int = 0  # CSCV blocks whose return sums each trial leaves (SweepResult.blocks)


def run_batch(batch: TrialBatch) -> SweepResult:
    """Backtest every combination of the batch; one stats row (and returns) per trial."""
    atr = atr_matrix(batch.bars, batch.atr_period)[:, 0] if batch.atr_period else None
    strategy = get_strategy(batch.strategy)
    res: SweepResult | None
    with _SWEEP_LOCK:
        if strategy.build_many is None and strategy.name == "sma_crossover":
            fast = _int_column(batch.combos, "fast", batch.fixed)
            slow = _int_column(batch.combos, "slow", batch.fixed)
            pairs = zip(fast, slow, strict=True)
            res = sweep_crossover(
                batch.bars,
                pairs,
                batch.spec,
                risk_free_rate=batch.risk_free_rate,
                keep_returns=batch.keep_returns,
                n_blocks=batch.n_blocks,
                atr=atr,
                params=batch.combos,
            )
        else:
            res = _sweep_many(strategy, batch, atr)
        if res is None:
            if strategy.build_many is not None:  # a language strategy: indicators shared
                targets = strategy.build_many(batch.bars, batch.fixed, batch.combos)
            else:
                targets = np.vstack(
                    [
                        build_targets(strategy, {**batch.fixed, **c}, batch.bars)[:, 0]
                        for c in batch.combos
                    ]
                )
            res = sweep_targets(
                batch.bars,
                targets,
                batch.spec,
                risk_free_rate=batch.risk_free_rate,
                keep_returns=batch.keep_returns,
                n_blocks=batch.n_blocks,
                atr=atr,
            )
    return SweepResult(batch.combos, res.stats, res.returns, res.blocks)


def _sweep_many(
    strategy: StrategyDef, batch: TrialBatch, atr: np.ndarray | None
) -> SweepResult | None:
    """Return the strategy's own parallel sweep of the batch, or None where it has none (or
    declines: the targets path then runs)."""
    if strategy.sweep_many is None:
        return None
    return strategy.sweep_many(
        batch.bars,
        batch.fixed,
        batch.combos,
        batch.spec,
        risk_free_rate=batch.risk_free_rate,
        keep_returns=batch.keep_returns,
        n_blocks=batch.n_blocks,
        atr=atr,
    )


def _int_column(combos: Sequence[Params], name: str, fixed: Mapping[str, Any]) -> list[int]:
    """Return one integer parameter of every combination (the fixed value where unsearched)."""
    if isinstance(combos, Combos) and name in combos.names:
        return [int(v) for v in combos.column(name)]
    return [int(c.get(name, fixed[name])) for c in combos]


def batches(plan: SearchPlan, n_bars: int) -> list[Combos]:
    """Return the plan's combinations cut into tasks of about BATCH_TRIAL_BARS trial-bars."""
    size = max(1, BATCH_TRIAL_BARS // max(1, n_bars))
    return [plan.combos[i : i + size] for i in range(0, len(plan.combos), size)]


def atr_period_of(request: BaseModel) -> int | None:
    """Return the ATR window volatility-target sizing needs, or None."""
    ps = getattr(request, "position_size", None)
    return ps.atr_period if isinstance(ps, VolatilityTarget) else None


# ---- ranking ----------------------------------------------------------------------------

_STAT = {name: i for i, name in enumerate(STAT_NAMES)}
_RENAMED = {"annualized_return": "annual_return", "annualized_volatility": "volatility"}
TRIAL_METRICS = (
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "total_return",
    "cagr",
    "annualized_return",
    "annualized_volatility",
    "max_drawdown",
    "win_rate",
    "exposure",
    "final_capital",
    "total_trades",
)


def metric_column(stats: np.ndarray, name: str, years: float) -> np.ndarray:
    """Return one metric of every trial from the sweep's statistics rows."""
    if name == "calmar_ratio":
        mdd = np.abs(stats[:, _STAT["max_drawdown"]])
        ann = stats[:, _STAT["annual_return"]]
        return np.divide(ann, mdd, out=np.full_like(ann, np.nan), where=mdd > 0)
    if name == "cagr":
        growth = 1.0 + stats[:, _STAT["total_return"]]
        if years <= 0:
            return np.full_like(growth, np.nan)
        return np.where(growth > 0, np.power(np.maximum(growth, 0.0), 1.0 / years) - 1.0, -1.0)
    return np.asarray(stats[:, _STAT[_RENAMED.get(name, name)]], dtype=np.float64)


def rank(values: np.ndarray, maximize: bool) -> np.ndarray:
    """Return trial indices best first (NaN last, ties in trial order)."""
    key = np.where(np.isnan(values), -np.inf, values if maximize else -values)
    return np.argsort(-key, kind="stable")


def trial_metrics(stats_row: np.ndarray, years: float) -> dict[str, int | float | None]:
    """Return every rankable metric of one trial (counts as integers)."""
    row = stats_row[None, :]
    out: dict[str, int | float | None] = {
        name: finite(float(metric_column(row, name, years)[0])) for name in TRIAL_METRICS
    }
    trades = out["total_trades"]
    out["total_trades"] = int(trades) if trades is not None else None
    return out


# ---- overfitting ------------------------------------------------------------------------


def cscv_blocks(n_bars: int, splits: int) -> int:
    """Return the CSCV blocks for ``n_bars``: ``splits``, fewer while a block has < 2 bars.

    Below 4 the PBO cannot be estimated.
    """
    used = splits
    while used >= 4 and n_bars // used < 2:
        used -= 2
    return used


# One CSCV split of one trial costs about four trial-bars of the sweep (measured: 11 ns on
# one core against ~2.5 ns per trial-bar of the parallel sweep).
CSCV_WEIGHT = 4


def search_cost(n_trials: int, n_bars: int, pbo_splits: int) -> int:
    """Return a search's whole cost in trial-bars: trials x bars of backtests, plus
    C(S, S/2) CSCV splits x trials for the PBO (weighted), plus the DSR's pass over the
    trials.
    """
    used = cscv_blocks(n_bars, pbo_splits) if n_trials >= 2 else 0
    splits = pbo_split_count(used) if used >= 4 else 0
    return n_trials * n_bars + CSCV_WEIGHT * splits * n_trials + n_trials


def stop_if_cancelled() -> None:
    """Raise JobCancelledError when the job or request running this task was cancelled."""
    if task_cancelled():
        raise JobCancelledError("The search was cancelled.")


def overfitting(
    blocks: np.ndarray, sample_returns: np.ndarray, winner: int, splits: int, rf: float
) -> tuple[Deflation | None, float | None, int]:
    """Return (the winner's DSR and its inputs, PBO, trials with a positive excess Sharpe).

    ``blocks`` (k, 2, S + 1) as ``SweepResult.blocks`` (S = ``splits``, 0 for no PBO);
    ``sample_returns`` the bar returns of the trials ``overfit.sample_indices`` picked, the
    winner's at row ``winner``; ``rf`` the per-bar risk-free return. Every Sharpe here is
    of excess returns, as the one that ranks the trials.
    """
    n = int(sample_returns.shape[1])
    sharpes = trial_sharpes(blocks, n, rf)
    profitable = int(np.sum(sharpes > 0))
    dsr: Deflation | None = None
    if n >= 2:
        dsr = deflate(sharpes, sample_returns[winner] - rf, sample_returns)
    pbo = finite(pbo_excess(blocks, n, splits, rf, stop_if_cancelled)) if splits else None
    return dsr, pbo, profitable


# ---- the search -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A search's trials ranked on the objective, and the winner's DSR and PBO."""

    stats: np.ndarray  # (k, N_STATS)
    order: np.ndarray  # trial indices, best first
    dsr: Deflation | None
    pbo: float | None
    profitable: int  # trials with a positive excess Sharpe


def judge(
    stats: np.ndarray,
    blocks: np.ndarray,
    task: TrialBatch,
    objective: str,
    maximize: bool,
    years: float,
) -> Verdict:
    """Rank the trials of ``task.combos`` and judge the winner.

    The winner and an evenly spaced sample of the trials are rerun for their bar returns
    (the winner's moments, the trials' correlation: ``overfit.deflate``).
    """
    stop_if_cancelled()
    order = rank(metric_column(stats, objective, years), maximize)
    best = int(order[0])
    sample = sample_indices(len(task.combos), task.bars.n_bars, best)
    combos = [task.combos[int(i)] for i in sample]
    rerun = replace(task, combos=combos, keep_returns=True, n_blocks=0)
    returns = run_batch(rerun).returns
    rf = per_period_rate(task.risk_free_rate, task.spec.periods_per_year)
    winner = int(np.searchsorted(sample, best))
    dsr, pbo, profitable = overfitting(blocks, returns, winner, task.n_blocks, rf)
    return Verdict(stats, order, dsr, pbo, profitable)


def search(task: TrialBatch, objective: str, maximize: bool, years: float) -> Verdict:
    """Run every trial of ``task``, rank them and judge the winner, in one go (one thread)."""
    res = run_batch(task)
    return judge(res.stats, res.blocks, task, objective, maximize, years)


async def optimize(
    request: OptimizeRequest,
    plan: SearchPlan,
    bars: Bars,
    bars_hash: str,
    spec: SimSpec,
    years: float,
    runner: Runner,
) -> OptimizeResult:
    """Run every trial of the plan in batches, rank them, and judge the winner.

    Answered directly (``Inline``), the whole search is one call on the engine thread; as
    a job, the trials run in batches that report progress, then the ranking and the DSR and
    PBO.
    """
    t0 = time.perf_counter()
    many = len(plan.combos) >= 2
    used = cscv_blocks(bars.n_bars, request.pbo_splits) if many else request.pbo_splits
    splits = used if used >= 4 and many else 0  # 0: no PBO
    task = TrialBatch(
        bars=bars,
        strategy=plan.definition or plan.strategy,
        fixed=plan.fixed,
        combos=plan.combos,
        spec=spec,
        risk_free_rate=request.risk_free_rate,
        keep_returns=False,
        atr_period=atr_period_of(request),
        n_blocks=splits,
    )
    how = (request.objective, request.maximize, years)
    if isinstance(runner, Inline):
        verdict = await runner.run(search, task, *how)
    else:
        chunks = batches(plan, bars.n_bars)
        size = len(chunks[0])
        what = "trials" if len(chunks) == 1 else f"batches of {size:,} trials"
        tasks = [replace(task, combos=chunk) for chunk in chunks]
        results = await runner.map(run_batch, tasks, where="thread", what=what)
        stats = np.vstack([r.stats for r in results])
        blocks = np.vstack([r.blocks for r in results])
        runner.report(len(chunks), len(chunks), "judging the winner (DSR, PBO)")
        verdict = await runner.run(judge, stats, blocks, task, *how)
    stats, order, dsr, pbo = verdict.stats, verdict.order, verdict.dsr, verdict.pbo
    best = int(order[0])
    combos = plan.combos
    top = [
        Trial(
            rank=i + 1,
            params={**_searched(plan.fixed), **combos[k]},
            metrics=trial_metrics(stats[k], years),
        )
        for i, k in enumerate(order[: request.top_n])
    ]
    elapsed = time.perf_counter() - t0
    first, last = bars.index[0], bars.index[-1]
    return OptimizeResult(
        strategy=plan.strategy,
        symbol=bars.symbols[0],
        start=_date(first),
        end=_date(last),
        bars=bars.n_bars,
        bars_hash=bars_hash,
        method=request.method,
        objective=request.objective,
        maximize=request.maximize,
        n_combinations=plan.n_combinations,
        n_trials=len(combos),
        n_invalid=plan.n_invalid,
        best_params={**_searched(plan.fixed), **combos[best]},
        top=top,
        deflated_sharpe_ratio=None if dsr is None else finite(dsr.deflated_sharpe_ratio),
        deflated_sharpe=dsr_inputs(dsr, spec.periods_per_year),
        pbo=pbo,
        pbo_splits=used,
        reading=reading(dsr, pbo, used, verdict.profitable, len(combos)),
        elapsed_s=elapsed,
        backtests_per_second=len(combos) / elapsed if elapsed > 0 else 0.0,
    )


def dsr_inputs(dsr: Deflation | None, periods_per_year: float) -> DeflatedSharpe | None:
    """Return the DSR's inputs as answered (Sharpe ratios per bar and annualised)."""
    if dsr is None:
        return None
    ann = math.sqrt(periods_per_year)
    return DeflatedSharpe(
        n_trials=dsr.n_trials,
        effective_trials=finite(dsr.effective_trials),
        sampled_trials=dsr.sampled_trials,
        sharpe=finite(dsr.sharpe),
        sharpe_annualized=finite(dsr.sharpe * ann),
        threshold_sharpe=finite(dsr.threshold_sharpe),
        threshold_sharpe_annualized=finite(dsr.threshold_sharpe * ann),
        sharpe_variance=finite(dsr.sharpe_variance),
        bars=dsr.bars,
        skewness=finite(dsr.skewness),
        kurtosis=finite(dsr.kurtosis),
        cross_trial_dsr=finite(dsr.cross_trial_dsr),
        cross_trial_threshold_sharpe=finite(dsr.cross_trial_threshold_sharpe),
        cross_trial_variance=finite(dsr.cross_trial_variance),
    )


def _searched(fixed: Mapping[str, Any]) -> Params:
    """Return the fixed parameters a trial's answer shows beside the searched ones."""
    return {k: v for k, v in fixed.items() if isinstance(v, int | float | bool)}


def _date(ts: np.datetime64) -> date:
    return pd.Timestamp(ts).date()
