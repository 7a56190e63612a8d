"""The backtest service's reads: stored runs and analyses as they were answered, lists,
fills, charts, and deletion.

Answers and charts are cached; a deleted run leaves a tombstone that every read checks
before a cached answer is trusted.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import multiprocessing
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from services.backtest import repository as repo
from services.backtest.analyses import Analyses
from services.backtest.charts import render_chart
from services.backtest.schemas import (
    BacktestResult,
    Fill,
    Page,
    RunList,
    RunSummary,
    StoredResult,
    TradeList,
)
from services.backtest.service.common import (
    RunNotFoundError,
    load_row,
    num,
    pct,
    run_answer,
)
from services.backtest.settings import BacktestSettings
from shared.cache import Cache, ModelCache
from shared.db import Database

MAX_CHART_FILLS = 2_000  # fills marked on a chart at most (evenly spread over the run)
CHART_WIDTHS = (400, 600, 800, 1000, 1200, 1600, 2000, 2400)
CHART_HEIGHTS = (200, 300, 450, 600, 800, 1000, 1300, 1600)


def snap_chart_size(width: int, height: int) -> tuple[int, int]:
    """Return the size bucket a chart of width x height pixels is drawn at (the nearest)."""
    return (
        min(CHART_WIDTHS, key=lambda w: (abs(w - width), w)),
        min(CHART_HEIGHTS, key=lambda h: (abs(h - height), h)),
    )


def _deleted_key(run_id: uuid.UUID) -> str:
    return f"backtest:deleted:{run_id}"


ROW_READS = 2


class BacktestReads:
    """Stored runs and analyses, read back as they were answered."""

    def __init__(
        self, *, db: Database, cache: Cache, settings: BacktestSettings, stored: Analyses
    ) -> None:
        self.db = db
        self.cache = cache
        self.settings = settings
        self.stored = stored
        self.results = ModelCache(cache, BacktestResult)
        self._charts: ProcessPoolExecutor | None = None
        # Reads of many rows (listings, fills) run ROW_READS at a time; the rest wait here
        # without using the event loop, so ten clients listing 1,000 runs in a loop leave
        # room for everyone else's requests.
        self.row_reads = asyncio.Semaphore(ROW_READS)

    def chart_pool(self) -> ProcessPoolExecutor:
        """Return the one worker process charts are drawn in (started on the first chart)."""
        if self._charts is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            self._charts = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return self._charts

    def close(self) -> None:
        """Stop the chart worker, if one was started."""
        charts, self._charts = self._charts, None
        if charts is not None:
            charts.shutdown(wait=False, cancel_futures=True)

    async def _deleted(self, run_id: uuid.UUID) -> bool:
        """Tell whether run_id was deleted while answers of it may still be cached."""
        gone, _ = await self.cache.get(_deleted_key(run_id))
        return gone is not None

    async def delete_result(self, run_id: uuid.UUID) -> None:
        """Delete a stored run and its fills (RunNotFoundError when there is none)."""
        async with self.db.session() as session:
            found = await repo.delete_run(session, run_id=run_id)
            await session.commit()
        if not found:
            raise RunNotFoundError(f"No stored backtest run {run_id}.", field="run_id")
        # Its answers and charts are cached under many keys (sizes, points), in every
        # process: a tombstone, read before any of them, outlives them all.
        await self.cache.set(_deleted_key(run_id), True, self.settings.backtest_result_ttl_s)

    async def get_any(self, run_id: uuid.UUID, *, equity_points: int = 250) -> StoredResult:
        """Return a stored backtest, walk-forward or search as it was answered (a backtest
        first: its answers are cached)."""
        try:
            return await self.get_result(run_id, equity_points=equity_points)
        except RunNotFoundError:
            analysis = await self.stored.row(run_id)
            if analysis is None:
                raise
        return self.stored.answer(analysis, equity_points=equity_points)

    async def get_result(self, run_id: uuid.UUID, *, equity_points: int = 250) -> BacktestResult:
        """Return a stored run as `POST /backtest` answered it."""
        key = f"backtest:result:{run_id}:{equity_points}"
        cached, _ = await self.results.get(key)
        if cached is not None and not await self._deleted(run_id):
            return cached
        row = await load_row(self.db, run_id)
        answer = run_answer(
            run_id=row.run_id,
            created=row.created_at,
            strategy=row.strategy_name,
            symbols=repo.split_symbols(row),
            bars_hash=row.bars_hash or "",
            config=row.configuration or {},
            stored=row.metrics,
            series=repo.decode_series(row.series),
            points=equity_points,
        )
        await self.results.set(key, answer, self.settings.backtest_result_ttl_s)
        return answer

    async def list_results(
        self,
        *,
        strategy: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
        kind: str | None = None,
    ) -> Callable[[], RunList]:
        """Read stored runs of every kind (or one) newest first, filtered by strategy and
        instrument; return the builder of their answer (run it off the event loop: up to
        1,000 rows)."""
        async with self.db.session() as session:
            rows, total = await repo.list_runs(
                session,
                kind=kind,
                strategy=strategy,
                symbol=symbol.upper() if symbol else None,
                limit=limit,
                offset=offset,
            )

        def build() -> RunList:
            runs = [
                RunSummary(
                    run_id=r.run_id,
                    kind=r.kind,
                    created_at=repo.aware(r.created_at),
                    strategy=r.strategy_name,
                    symbols=repo.split_symbols(r),
                    start_date=repo.aware(r.start_date).date(),
                    end_date=repo.aware(r.end_date).date(),
                    initial_capital=r.initial_capital,
                    final_capital=r.final_capital,
                    total_return=r.total_return,
                    sharpe_ratio=r.sharpe_ratio,
                    max_drawdown=r.max_drawdown,
                    win_rate=r.win_rate,
                    total_trades=r.total_trades,
                )
                for r in rows
            ]
            return RunList(results=runs, page=Page.of(total, limit, offset, len(runs)))

        return build

    async def get_trades(
        self, run_id: uuid.UUID, *, limit: int, offset: int
    ) -> Callable[[], TradeList]:
        """Read a page of a stored run's fills, oldest first; return the builder of its
        answer (run it off the event loop: up to 1,000 rows)."""
        await load_row(self.db, run_id)
        async with self.db.session() as session:
            rows, total = await repo.load_fills(session, run_id=run_id, limit=limit, offset=offset)
        return functools.partial(_trade_list, run_id, rows, total, limit, offset)

    async def chart(self, run_id: uuid.UUID, *, width: int, height: int) -> bytes:
        """Return the PNG chart of a stored run or walk-forward (drawn once per size bucket,
        then cached).

        The size is snapped to a few buckets (a handful of cache keys per run), at most
        `MAX_CHART_FILLS` fills are marked (evenly spread), and a run's chart is drawn in a
        worker process: matplotlib holds the GIL for the whole figure.
        """
        width, height = snap_chart_size(width, height)
        key = f"backtest:chart:{run_id}:{width}x{height}:v2"
        cached, _ = await self.cache.get(key)
        if isinstance(cached, str) and not await self._deleted(run_id):
            return base64.b64decode(cached)
        analysis = await self.stored.row(run_id)
        if analysis is not None:
            png = await asyncio.to_thread(self.stored.chart, analysis, width=width, height=height)
            await self.cache.set(
                key, base64.b64encode(png).decode(), self.settings.backtest_result_ttl_s
            )
            return png
        row = await load_row(self.db, run_id)
        async with self.db.session() as session:
            marks = await repo.load_fill_marks(session, run_id=run_id, most=MAX_CHART_FILLS)
        series = repo.decode_series(row.series)
        symbols = repo.split_symbols(row)
        m = row.metrics.get("metrics", {})
        b = row.metrics.get("benchmark", {})
        title = (
            f"{row.strategy_name} on {', '.join(symbols)}: "
            f"{pct(m.get('total_return'))} (buy and hold {pct(b.get('total_return'))}), "
            f"Sharpe {num(m.get('sharpe_ratio'))}, max drawdown {pct(m.get('max_drawdown'))}"
        )
        draw = functools.partial(
            render_chart,
            dates=series.dates,
            equity=series.equity,
            benchmark=series.benchmark,
            fill_dates=[np.datetime64(repo.aware(moment).date()) for moment, _ in marks],
            fill_directions=[direction for _, direction in marks],
            title=title,
            width=width,
            height=height,
        )
        png = await asyncio.get_running_loop().run_in_executor(self.chart_pool(), draw)
        await self.cache.set(
            key, base64.b64encode(png).decode(), self.settings.backtest_result_ttl_s
        )
        return png


def _trade_list(
    run_id: uuid.UUID, rows: Sequence[Any], total: int, limit: int, offset: int
) -> TradeList:
    fills = [
        Fill(
            timestamp=repo.aware(r.timestamp),
            symbol=r.symbol,
            direction="buy" if r.direction == "buy" else "sell",
            shares=r.shares,
            price=r.price,
            commission=r.commission,
            slippage_cost=r.slippage_cost,
            total_cost=r.total_cost,
            pnl=r.pnl,
            portfolio_value=r.portfolio_value,
            reason=r.reason,
            trade_return=r.trade_return,
        )
        for r in rows
    ]
    return TradeList(run_id=run_id, trades=fills, page=Page.of(total, limit, offset, len(fills)))
