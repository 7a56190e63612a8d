"""Parameter search: the grid, constraints, batches of trials on the sweep kernels, ranking,
and the overfitting statistics of the winner (Deflated Sharpe Ratio, PBO by CSCV).

`plan_search` turns a request into the combinations to try (422s name the field);
`run_batch` is the task a job maps over (module level: worker processes import it);
`optimize` runs a plan through a `Runner` (a `JobContext`, or `Inline` for short work).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from services.backtest.config import VolatilityTarget, atr_matrix
from services.backtest.engine.analysis import SweepResult, sweep_crossover, sweep_targets
from services.backtest.engine.core import SimSpec
from services.backtest.engine.fast import STAT_NAMES
from services.backtest.engine.runner import Bars
from services.backtest.metrics import (
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
)
from services.backtest.schemas import (
    OptimizeRequest,
    OptimizeResult,
    Range,
    SearchSettings,
    Trial,
    finite,
)
from services.backtest.strategies import build_targets, get_strategy
from shared.errors import ValidationProblemError

T = TypeVar("T")
R = TypeVar("R")

MAX_VALUES_PER_PARAM = 100_000
MAX_GRID = 2_000_000
BATCH_TRIAL_BARS = 4_000_000  # trials x bars per task: ~30 MB of returns, tens of ms
# Numba's workqueue threading layer aborts on concurrent parallel calls; omp and tbb do not.
# One parallel sweep at a time per process (each one already uses every core).
_SWEEP_LOCK = threading.Lock()
_CONSTRAINT = re.compile(
    r"^\s*([A-Za-z_]\w*|-?\d+(?:\.\d+)?)\s*(<=|>=|==|!=|<|>)\s*([A-Za-z_]\w*|-?\d+(?:\.\d+)?)\s*$"
)
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
Params = dict[str, float | int | bool]


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


class Inline:
    """Run tasks one after another in a worker thread (short work answered directly)."""

    async def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, where: Any = "thread", what: str = ""
    ) -> list[R]:
        """Run fn(item) for every item in a thread; return the results in order."""
        return [await asyncio.to_thread(fn, item) for item in items]

    async def run(self, fn: Callable[..., R], /, *args: Any, where: Any = "thread") -> R:
        """Run fn(*args) in a thread."""
        return await asyncio.to_thread(fn, *args)

    def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Do nothing: nobody follows inline work."""


# ---- the combinations ---------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPlan:
    """The combinations to try, and what was left out."""

    strategy: str
    fixed: dict[str, Any]  # the strategy.params every trial starts from
    combos: list[Params]  # only the searched parameters
    n_combinations: int  # meeting the constraints
    n_invalid: int  # rejected by the strategy's own checks


def _numeric_fields(params: type[BaseModel]) -> dict[str, bool]:
    """Return searchable parameter name -> is integer."""
    out: dict[str, bool] = {}
    for name, info in params.model_fields.items():
        if info.annotation is int:
            out[name] = True
        elif info.annotation is float:
            out[name] = False
    return out


def _values(name: str, spec: list[float] | Range, is_int: bool) -> np.ndarray:
    """Return the values one parameter takes (ValidationProblemError naming it)."""
    field = f"param_grid.{name}"
    if isinstance(spec, Range):
        count = math.floor((spec.stop - spec.start) / spec.step + 1e-9) + 1
        if count < 1:
            raise ValidationProblemError(
                f"{name}: stop ({spec.stop:g}) is below start ({spec.start:g})", field=field
            )
        if count > MAX_VALUES_PER_PARAM:
            raise ValidationProblemError(
                f"{name}: {count:,} values; at most {MAX_VALUES_PER_PARAM:,}", field=field
            )
        values = np.round(spec.start + spec.step * np.arange(count), 10)
    else:
        if not spec:
            raise ValidationProblemError(f"{name}: give at least one value", field=field)
        if len(spec) > MAX_VALUES_PER_PARAM:
            raise ValidationProblemError(
                f"{name}: {len(spec):,} values; at most {MAX_VALUES_PER_PARAM:,}", field=field
            )
        values = np.unique(np.asarray(spec, dtype=np.float64))
    if not np.isfinite(values).all():
        raise ValidationProblemError(f"{name}: values must be finite", field=field)
    if is_int:
        if np.abs(values - np.round(values)).max() > 1e-9:
            raise ValidationProblemError(f"{name} takes integers only", field=field)
        values = np.round(values)
    return np.asarray(values, dtype=np.float64)


def _operand(token: str, grid: Mapping[str, np.ndarray], fixed: Mapping[str, Any]) -> Any:
    if token in grid:
        return grid[token]
    if token in fixed:
        return fixed[token]
    return float(token)


def _parse_constraints(
    constraints: Sequence[str], names: Iterable[str]
) -> list[tuple[str, str, str]]:
    """Return each constraint as (left, op, right), checking that names are parameters."""
    known = set(names)
    parsed = []
    for i, text in enumerate(constraints):
        m = _CONSTRAINT.match(text)
        if m is None:
            raise ValidationProblemError(
                f"constraint {text!r}: expected `<param> <op> <param or number>` with op one "
                "of < <= > >= == !=, e.g. `fast < slow`",
                field=f"constraints[{i}]",
            )
        left, op, right = m.groups()
        for token in (left, right):
            if (token[0].isalpha() or token[0] == "_") and token not in known:
                raise ValidationProblemError(
                    f"constraint {text!r}: {token!r} is not a parameter of the strategy "
                    f"({', '.join(sorted(known))})",
                    field=f"constraints[{i}]",
                )
        parsed.append((left, op, right))
    return parsed


def plan_search(
    request: SearchSettings,
    strategy_name: str,
    fixed_params: BaseModel,
    *,
    method: str = "grid",
    n_trials: int | None = None,
    seed: int = 0,
    require_grid: bool = True,
) -> SearchPlan:
    """Return the combinations a search tries (422 naming the field when it cannot)."""
    strategy = get_strategy(strategy_name)
    fixed = fixed_params.model_dump()
    searchable = _numeric_fields(strategy.params)
    if require_grid and not request.param_grid:
        raise ValidationProblemError(
            f"param_grid: name at least one parameter of {strategy_name} to search "
            f"({', '.join(searchable) or 'it has none'})",
            field="param_grid",
        )
    grid: dict[str, np.ndarray] = {}
    for name, spec in request.param_grid.items():
        if name not in searchable:
            why = "is not a numeric parameter" if name in fixed else "is not a parameter"
            raise ValidationProblemError(
                f"{name} {why} of {strategy_name}; searchable: {', '.join(searchable) or 'none'}",
                field=f"param_grid.{name}",
            )
        grid[name] = _values(name, spec, searchable[name])
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_GRID:
        raise ValidationProblemError(
            f"param_grid has {size:,} combinations; at most {MAX_GRID:,}. Coarsen the steps.",
            field="param_grid",
        )
    constraints = _parse_constraints(request.constraints, fixed)
    names = list(grid)
    if names:
        mesh = np.meshgrid(*grid.values(), indexing="ij")
        columns = {n: m.reshape(-1) for n, m in zip(names, mesh, strict=True)}
    else:
        columns = {}
    keep = np.ones(size, dtype=bool)
    for left, op, right in constraints:
        ok = _OPS[op](_operand(left, columns, fixed), _operand(right, columns, fixed))
        keep &= np.broadcast_to(np.asarray(ok, dtype=bool), keep.shape)
    rows = np.flatnonzero(keep)
    n_combinations = int(rows.size)
    if n_combinations == 0:
        raise ValidationProblemError(
            "No combination of param_grid meets the constraints.", field="constraints"
        )
    if method == "random" and n_trials is not None and n_trials < rows.size:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=n_trials, replace=False))
    combos: list[Params] = []
    invalid = 0
    for r in rows:
        combo: Params = {
            n: int(columns[n][r]) if searchable[n] else float(columns[n][r]) for n in names
        }
        try:
            strategy.parse({**fixed, **combo})
        except ValidationError:
            invalid += 1
            continue
        combos.append(combo)
    if not combos:
        raise ValidationProblemError(
            f"Every combination of param_grid fails {strategy_name}'s own parameter checks "
            "(e.g. slow > fast); add a constraint or change the values.",
            field="param_grid",
        )
    return SearchPlan(strategy_name, fixed, combos, n_combinations, invalid)


# ---- running trials -------------------------------------------------------------------


@dataclass(frozen=True)
class TrialBatch:
    """Trials of one strategy on one instrument's bars (a task of a search)."""

    bars: Bars
    strategy: str
    fixed: dict[str, Any]
    combos: list[Params]
    spec: SimSpec
    risk_free_rate: float
    keep_returns: bool
    atr_period: int | None = None


def run_batch(batch: TrialBatch) -> SweepResult:
    """Backtest every combination of the batch; one stats row (and returns) per trial."""
    atr = atr_matrix(batch.bars, batch.atr_period)[:, 0] if batch.atr_period else None
    with _SWEEP_LOCK:
        if batch.strategy == "sma_crossover":
            pairs = [
                (
                    int(c.get("fast", batch.fixed["fast"])),
                    int(c.get("slow", batch.fixed["slow"])),
                )
                for c in batch.combos
            ]
            res = sweep_crossover(
                batch.bars,
                pairs,
                batch.spec,
                risk_free_rate=batch.risk_free_rate,
                keep_returns=batch.keep_returns,
                atr=atr,
            )
        else:
            targets = np.vstack(
                [
                    build_targets(batch.strategy, {**batch.fixed, **c}, batch.bars)[:, 0]
                    for c in batch.combos
                ]
            )
            res = sweep_targets(
                batch.bars,
                targets,
                batch.spec,
                risk_free_rate=batch.risk_free_rate,
                keep_returns=batch.keep_returns,
                atr=atr,
            )
    return SweepResult(list(batch.combos), res.stats, res.returns)  # type: ignore[arg-type]


def batches(plan: SearchPlan, n_bars: int) -> list[list[Params]]:
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


def pbo_split_count(splits: int) -> int:
    """Return how many CSCV splits S blocks give: C(S, S/2)."""
    return math.comb(splits, splits // 2)


def overfitting(
    returns: np.ndarray, best: int, splits: int
) -> tuple[float | None, float | None, int]:
    """Return (DSR of trial `best`, PBO, splits used); None where the data cannot say."""
    dsr = finite(deflated_sharpe_ratio(returns, selected=best))
    pbo: float | None = None
    used = splits
    if returns.shape[0] >= 2:
        while used >= 4 and returns.shape[1] // used < 2:
            used -= 2
        if used >= 4:
            pbo = finite(probability_of_backtest_overfitting(returns, used)[0])
    return dsr, pbo, used


def reading(dsr: float | None, pbo: float | None, n_trials: int, splits: int) -> str:
    """Return one line on whether the winner looks overfitted."""
    d = "n/a" if dsr is None else f"{dsr:.2f}"
    p = "n/a" if pbo is None else f"{pbo:.2f}"
    if pbo is not None and pbo > 0.5:
        return (
            f"Likely overfitted: PBO {p} > 0.5 (the in-sample best ranks at or below the "
            f"out-of-sample median in {pbo:.0%} of {pbo_split_count(splits):,} splits); "
            f"DSR {d}."
        )
    if dsr is None or dsr < 0.95:
        return (
            f"Not significant after {n_trials:,} trials: DSR {d} < 0.95 (the best Sharpe is "
            f"within what luck gives the best of {n_trials:,}); PBO {p}."
        )
    return f"No sign of overfitting: DSR {d} >= 0.95 and PBO {p} <= 0.5."


# ---- the search -------------------------------------------------------------------------


def _pbo_task(returns: np.ndarray, best: int, splits: int) -> tuple[Any, Any, int]:
    return overfitting(returns, best, splits)


async def optimize(
    request: OptimizeRequest,
    plan: SearchPlan,
    bars: Bars,
    bars_hash: str,
    spec: SimSpec,
    years: float,
    runner: Runner,
) -> OptimizeResult:
    """Run every trial of the plan in batches, rank them, and judge the winner."""
    t0 = time.perf_counter()
    chunks = batches(plan, bars.n_bars)
    tasks = [
        TrialBatch(
            bars=bars,
            strategy=plan.strategy,
            fixed=plan.fixed,
            combos=chunk,
            spec=spec,
            risk_free_rate=request.risk_free_rate,
            keep_returns=True,
            atr_period=atr_period_of(request),
        )
        for chunk in chunks
    ]
    size = len(chunks[0])
    what = "trials" if len(chunks) == 1 else f"batches of {size:,} trials"
    results = await runner.map(run_batch, tasks, where="thread", what=what)
    stats = np.vstack([r.stats for r in results])
    returns = np.vstack([r.returns for r in results])
    values = metric_column(stats, request.objective, years)
    order = rank(values, request.maximize)
    best = int(order[0])
    runner.report(len(chunks), len(chunks), "judging the winner (DSR, PBO)")
    dsr, pbo, splits = await runner.run(_pbo_task, returns, best, request.pbo_splits)
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
        deflated_sharpe_ratio=dsr,
        pbo=pbo,
        pbo_splits=splits,
        reading=reading(dsr, pbo, len(combos), splits),
        elapsed_s=elapsed,
        backtests_per_second=len(combos) / elapsed if elapsed > 0 else 0.0,
    )


def _searched(fixed: Mapping[str, Any]) -> Params:
    """Return the fixed parameters a trial's answer shows beside the searched ones."""
    return {k: v for k, v in fixed.items() if isinstance(v, int | float | bool)}


def _date(ts: np.datetime64) -> date:
    return pd.Timestamp(ts).date()
