"""Stored walk-forwards and parameter searches: every analysis gets a `run_id` and is kept.

A walk-forward is computed with its whole stitched out-of-sample equity (`FULL_POINTS`
points), which is stored as the run's series (for its chart and for Monte Carlo); its answer
then carries the curve at the request's `equity_points`, exactly as computed directly. A
search is stored as answered. Inline or as a job, the analysis is stored before it is
answered, so a client that gave up finds it in `GET /results`.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from pydantic import ValidationError

from services.backtest import repository as repo
from services.backtest.charts import render_chart
from services.backtest.market import LoadedBars
from services.backtest.metrics import drawdowns, returns_from_equity
from services.backtest.reports import equity_curve
from services.backtest.resampling import Source
from services.backtest.schemas import (
    AnalysisLinks,
    OptimizeRequest,
    OptimizeResult,
    WalkForwardRequest,
    WalkForwardResult,
)
from shared.db import Database
from shared.errors import NotFoundError, ValidationProblemError
from shared.tables import utcnow

# Most points a stored walk-forward series keeps (the request maximum: every daily bar of
# 80 years); a longer one is stored evenly thinned, first and last bar kept.
FULL_POINTS = 20_000


class OutdatedRunError(NotFoundError):
    """The stored analysis was answered in a shape this version can no longer read."""

    code = "stored_run_outdated"
    title = "Stored run outdated"


class NoChartError(NotFoundError):
    """The stored analysis has no equity curve to draw (a parameter search)."""

    code = "no_chart"
    title = "No chart"


def full_request(request: WalkForwardRequest) -> WalkForwardRequest:
    """Return the walk-forward request that keeps the whole stitched equity."""
    return request.model_copy(update={"equity_points": FULL_POINTS})


def links(run_id: uuid.UUID, kind: str) -> AnalysisLinks:
    """Return where a stored analysis is read again."""
    base = f"/results/{run_id}"
    return AnalysisLinks(result=base, chart=f"{base}/chart.png" if kind == "walk_forward" else None)


def _series(result: WalkForwardResult) -> repo.Series:
    curve = result.equity
    return repo.Series(
        dates=np.asarray(curve.timestamps, dtype="datetime64[D]"),
        equity=np.asarray(curve.equity, dtype=np.float64),
        benchmark=np.asarray(curve.benchmark, dtype=np.float64),
    )


def _headline(metrics: dict[str, Any]) -> dict[str, float | int | None]:
    return {k: metrics.get(k) for k in repo.HEADLINE}


class Analyses:
    """Store and read back walk-forwards and searches (table `analysis_runs`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def store_walk_forward(
        self, request: WalkForwardRequest, loaded: LoadedBars, full: WalkForwardResult
    ) -> WalkForwardResult:
        """Store a walk-forward computed with `full_request`; return its answer (the curve
        at the request's `equity_points`, its id, the market's coverage notes)."""
        series = _series(full)
        run_id, created = uuid.uuid4(), utcnow()
        answer = full.model_copy(
            update={
                "run_id": run_id,
                "created_at": created,
                "equity": equity_curve(
                    series.dates, series.equity, series.benchmark, request.equity_points
                ),
                "notes": [*loaded.notes, *full.notes],
                "links": links(run_id, "walk_forward"),
            }
        )
        await self._insert(
            run_id=run_id,
            kind="walk_forward",
            created=created,
            request=request,
            symbol=full.symbol,
            bars_hash=full.bars_hash,
            answer=answer.model_dump(mode="json", exclude={"equity"}),
            series=series,
            headline=_headline(full.metrics.model_dump()),
        )
        return answer

    async def store_optimization(
        self, request: OptimizeRequest, loaded: LoadedBars, result: OptimizeResult
    ) -> OptimizeResult:
        """Store a search; return its answer with its id and the market's coverage notes."""
        run_id, created = uuid.uuid4(), utcnow()
        answer = result.model_copy(
            update={
                "run_id": run_id,
                "created_at": created,
                "notes": [*loaded.notes, *result.notes],
                "links": links(run_id, "optimization"),
            }
        )
        best = result.top[0].metrics if result.top else {}
        await self._insert(
            run_id=run_id,
            kind="optimization",
            created=created,
            request=request,
            symbol=result.symbol,
            bars_hash=result.bars_hash,
            answer=answer.model_dump(mode="json"),
            series=None,
            headline=_headline(best),
        )
        return answer

    async def _insert(
        self,
        *,
        run_id: uuid.UUID,
        kind: str,
        created: Any,
        request: WalkForwardRequest | OptimizeRequest,
        symbol: str,
        bars_hash: str,
        answer: dict[str, Any],
        series: repo.Series | None,
        headline: dict[str, float | int | None],
    ) -> None:
        async with self.db.session() as session:
            await repo.insert_analysis(
                session,
                run_id=run_id,
                kind=kind,
                created_at=created,
                strategy=request.strategy.label,
                symbol=symbol,
                start_date=request.start_date,
                end_date=request.end_date,
                configuration=request.model_dump(mode="json", exclude={"equity_points"}),
                bars_hash=bars_hash,
                result=answer,
                series=series,
                initial_capital=request.initial_capital,
                headline=headline,
            )
            await session.commit()

    async def row(self, run_id: uuid.UUID) -> Any | None:
        """Return the stored analysis row, or None."""
        async with self.db.session() as session:
            return await repo.load_analysis(session, run_id=run_id)

    @staticmethod
    def answer(row: Any, *, equity_points: int) -> WalkForwardResult | OptimizeResult:
        """Return a stored analysis as it was answered (a walk-forward's curve at
        equity_points)."""
        try:
            if row.kind == "optimization":
                return OptimizeResult.model_validate(row.result)
            series = repo.decode_series(row.series)
            curve = equity_curve(series.dates, series.equity, series.benchmark, equity_points)
            return WalkForwardResult.model_validate({**row.result, "equity": curve.model_dump()})
        except ValidationError as e:  # stored by a version whose answer had another shape
            raise OutdatedRunError(
                f"Stored {row.kind} {row.run_id} was answered by an older version of this "
                f"service in a shape it no longer reads ({e.error_count()} differences): run "
                "it again with its config.",
                field="run_id",
                log_detail=str(e),
            ) from e

    @staticmethod
    def chart(row: Any, *, width: int, height: int) -> bytes:
        """Return the PNG of a stored walk-forward's stitched equity (CPU work: a thread)."""
        if row.kind != "walk_forward":
            raise NoChartError(
                f"Stored run {row.run_id} is a parameter search: it has no equity curve to "
                "draw. Chart a backtest of its best_params instead.",
                field="run_id",
            )
        series = repo.decode_series(row.series)
        m = row.result.get("metrics", {})
        b = row.result.get("benchmark", {})
        title = (
            f"walk-forward of {row.strategy_name} on {row.symbol}, out of sample "
            f"({row.result.get('n_windows')} windows): {_pct(m.get('total_return'))} "
            f"(buy and hold {_pct(b.get('total_return'))}), Sharpe "
            f"{_num(m.get('sharpe_ratio'))}, max drawdown {_pct(m.get('max_drawdown'))}"
        )
        return render_chart(
            dates=series.dates,
            equity=series.equity,
            benchmark=series.benchmark,
            fill_dates=[],
            fill_directions=[],
            title=title,
            width=width,
            height=height,
        )

    @staticmethod
    def source(row: Any) -> Source:
        """Return a stored walk-forward's stitched out-of-sample returns to resample."""
        if row.kind != "walk_forward":
            raise ValidationProblemError(
                f"Stored run {row.run_id} is a parameter search: it has no returns to "
                "resample. Give a backtest's or a walk-forward's run_id.",
                field="run_id",
            )
        series = repo.decode_series(row.series)
        initial = float(row.initial_capital)
        return Source(
            run_id=row.run_id,
            returns=returns_from_equity(series.equity, initial),
            trade_returns=np.array([], dtype=np.float64),
            total_return=float(series.equity[-1] / initial - 1.0),
            max_drawdown=drawdowns(series.equity, initial).max_drawdown,
            kind="walk_forward",
        )


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2f}"
