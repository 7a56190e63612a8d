"""What the backtest service's runs, analyses and reads share: their errors, the record of
prepared long work, the `ml_ensemble` helpers, and a stored run's row and answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from services.backtest import repository as repo
from services.backtest.grid import SearchPlan
from services.backtest.market import LoadedBars
from services.backtest.reports import equity_curve
from services.backtest.resampling import Source
from services.backtest.schemas import (
    BacktestResult,
    Benchmark,
    Metrics,
    RunConfig,
    RunLinks,
    TradesSummary,
)
from services.backtest.signals import Calls
from services.backtest.strategies import ArraySignals, MlEnsembleParams
from shared.db import Database
from shared.errors import AppError, NotFoundError


class StrategyUnavailableError(AppError):
    """The strategy exists but cannot run here (it needs a service this deployment lacks)."""

    status = 422
    code = "strategy_unavailable"
    title = "Strategy unavailable"


class RunNotFoundError(NotFoundError):
    """No stored run has this id."""

    code = "run_not_found"


@dataclass(frozen=True)
class Prepared:
    """Checked inputs and loaded bars of a long request, and whether it runs as a job."""

    work: str  # optimize | walk_forward | monte_carlo
    request: Any
    loaded: LoadedBars | None
    plan: SearchPlan | None
    source: Source | None
    cost: int  # trial-bars or path steps
    needs_job: bool


@dataclass(frozen=True)
class MlSignals:
    """An `ml_ensemble` run's inputs from the predictor: the request with the version it
    used, the targets, a digest of the calls and notes on how far to trust them."""

    request: RunConfig
    targets: ArraySignals
    digest: str
    notes: list[str]


def ml_notes(
    calls: list[Calls],
    params: MlEnsembleParams,
    trained_on: tuple[date, date] | None,
    traded: tuple[date, date],
) -> list[str]:
    """Return notes on the calls traded: version, hit rates against the baselines, and
    whether the run overlaps the version's training data."""
    out = []
    if trained_on is not None and trained_on[0] <= traded[1] and traded[0] <= trained_on[1]:
        out.append(
            f"ml_ensemble: this run ({traded[0]}..{traded[1]}) overlaps the data the model "
            f"version was trained on ({trained_on[0]}..{trained_on[1]}): those bars are in "
            "sample and flatter it. Backtest after its training end, or use POST "
            "/walk_forward, which trains each window on earlier bars only."
        )
    for c in calls:
        h = c.hit_rate
        weights = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.weights.items()))
        confident = int((c.confidence >= params.min_confidence).sum())
        known = np.isfinite(c.outcome)
        oos = int((known & ~c.in_sample).sum()) if c.in_sample.size == known.size else c.realised
        out.append(
            f"ml_ensemble: {c.symbol} traded {c.model} {c.version} (weights {weights}); "
            f"{c.days.size} calls, {confident} at or above min_confidence "
            f"{params.min_confidence:g}; over {oos} realised out-of-sample bars (of "
            f"{c.realised} realised) the calls were "
            f"right {pct(h.get('model'))} vs {pct(h.get('majority'))} for the majority class "
            f"and {pct(h.get('previous'))} for yesterday's direction. "
            + (
                "Bars before the call range (the model's feature window) were not traded. "
                if c.skipped
                else ""
            )
            + c.verdict
        )
    return out


async def load_row(db: Database, run_id: uuid.UUID) -> Any:
    """Return a stored run's row (RunNotFoundError when there is none, or it is partial)."""
    async with db.session() as session:
        row = await repo.load_run(session, run_id=run_id)
    if row is None or row.series is None or not row.metrics:
        raise RunNotFoundError(f"No stored backtest run {run_id}.", field="run_id")
    return row


def run_answer(
    *,
    run_id: uuid.UUID,
    created: Any,
    strategy: str,
    symbols: list[str],
    bars_hash: str,
    config: dict[str, Any],
    stored: dict[str, Any],
    series: repo.Series,
    points: int,
) -> BacktestResult:
    """Return a run's answer from what is stored (POST and GET build it the same way)."""
    base = f"/results/{run_id}"
    return BacktestResult(
        run_id=run_id,
        created_at=repo.aware(created),
        strategy=strategy,
        symbols=symbols,
        start=date.fromisoformat(stored["start"]),
        end=date.fromisoformat(stored["end"]),
        bars=int(stored["bars"]),
        bars_hash=bars_hash,
        config=config,
        metrics=Metrics.model_validate(stored["metrics"]),
        benchmark=Benchmark.model_validate(stored["benchmark"]),
        trades=TradesSummary.model_validate(stored["trades"]),
        equity=equity_curve(series.dates, series.equity, series.benchmark, points),
        notes=list(stored["notes"]),
        links=RunLinks(result=base, trades=f"/trades/{run_id}", chart=f"{base}/chart.png"),
    )


def pct(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"


def num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2f}"
