"""The backtest service's domain logic: load bars, simulate, store, read back, analyse.

Never imports FastAPI: routes call these methods, jobs run them, tests call them directly.
Long work is prepared here first (inputs checked, bars loaded: every bad input is a 4xx
before anything is accepted), then run inline or as a job: `Prepared.needs_job` says which.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from services.backtest import repository as repo
from services.backtest.analyses import Analyses, full_request
from services.backtest.catalog import StrategyCatalog, needs_signals
from services.backtest.charts import render_chart
from services.backtest.config import strategy_definition
from services.backtest.grid import SearchPlan, count_search, plan_search
from services.backtest.market import LoadedBars, MarketBars
from services.backtest.metrics import calendar_years, drawdowns, returns_from_equity
from services.backtest.mlwalk import ml_walk_forward
from services.backtest.optimize import Inline, Runner, optimize, search_cost
from services.backtest.reports import (
    BenchmarkRun,
    Evaluation,
    benchmark_config,
    equity_curve,
    evaluate,
    mean_ci,
    run_benchmark,
    with_mean_ci,
)
from services.backtest.resampling import Source, resample, steps
from services.backtest.schemas import (
    BacktestRequest,
    BacktestResult,
    Benchmark,
    Fill,
    Metrics,
    MonteCarloRequest,
    MonteCarloResult,
    OptimizeRequest,
    OptimizeResult,
    Page,
    RunConfig,
    RunLinks,
    RunList,
    RunSummary,
    StoredResult,
    TradeList,
    TradesSummary,
    WalkForwardRequest,
    WalkForwardResult,
)
from services.backtest.settings import BacktestSettings
from services.backtest.signals import Calls, Predictor, targets_from_calls
from services.backtest.strategies import ArraySignals, MlEnsembleParams
from services.backtest.walkforward import check_windows, walk_forward
from shared.cache import Cache, LRUCache, ModelCache
from shared.db import Database
from shared.errors import AppError, NotFoundError, ValidationProblemError
from shared.http import local_app
from shared.peers import peer_client
from shared.tables import utcnow

STORED_VERSION = 1
MAX_CHART_FILLS = 2_000  # fills marked on a chart at most (evenly spread over the run)
CHART_WIDTHS = (400, 600, 800, 1000, 1200, 1600, 2000, 2400)
CHART_HEIGHTS = (200, 300, 450, 600, 800, 1000, 1300, 1600)


def snap_chart_size(width: int, height: int) -> tuple[int, int]:
    """Return the size bucket a chart of width x height pixels is drawn at (the nearest)."""
    return (
        min(CHART_WIDTHS, key=lambda w: (abs(w - width), w)),
        min(CHART_HEIGHTS, key=lambda h: (abs(h - height), h)),
    )


class StrategyUnavailableError(AppError):
    """The strategy exists but cannot run here (it needs a service this deployment lacks)."""

    status = 422
    code = "strategy_unavailable"
    title = "Strategy unavailable"


def _deleted_key(run_id: uuid.UUID) -> str:
    return f"backtest:deleted:{run_id}"


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
            f"right {_pct(h.get('model'))} vs {_pct(h.get('majority'))} for the majority class "
            f"and {_pct(h.get('previous'))} for yesterday's direction. "
            + (
                "Bars before the call range (the model's feature window) were not traded. "
                if c.skipped
                else ""
            )
            + c.verdict
        )
    return out


def config_digest(config: dict[str, Any], bars_hash: str) -> str:
    """Return a key naming one configuration on one set of bars."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{text}|{bars_hash}".encode()).hexdigest()


def stored_config(request: RunConfig) -> dict[str, Any]:
    """Return the configuration stored with a run: every field, defaults filled in."""
    return request.model_dump(mode="json", exclude={"equity_points"})


class BacktestService:
    """Backtests on the market service's bars, stored so they survive a restart."""

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        market: MarketBars,
        settings: BacktestSettings,
        predictor: Predictor | None = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.market = market
        self.settings = settings
        self.results = ModelCache(cache, BacktestResult)
        self._evaluations = LRUCache(maxsize=64, max_bytes=256 * 2**20)
        self._predictor = predictor
        self.catalog = StrategyCatalog(db, self.predictor_configured)
        self._charts: ProcessPoolExecutor | None = None
        self.analyses = Analyses(db)

    @property
    def predictor(self) -> Predictor:
        """Return the predictor client (made on first use: a co-hosted predictor app may
        register after this service started)."""
        if self._predictor is None:
            self._predictor = Predictor(
                peer_client(self.settings, "predictor"),
                train_timeout_s=self.settings.predictor_train_timeout_s,
            )
        return self._predictor

    def chart_pool(self) -> ProcessPoolExecutor:
        """Return the one worker process charts are drawn in (started on the first chart)."""
        if self._charts is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            self._charts = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return self._charts

    async def aclose(self) -> None:
        """Close the clients this service opened and stop the chart worker."""
        if self._predictor is not None:
            await self._predictor.aclose()
        charts, self._charts = self._charts, None
        if charts is not None:
            charts.shutdown(wait=False, cancel_futures=True)

    # ---- strategies and inputs ----------------------------------------------------------

    def predictor_configured(self) -> bool:
        """Return whether a predictor service is reachable by configuration."""
        return bool(self.settings.predictor_url) or local_app("predictor") is not None

    def check_strategy(self, config: RunConfig) -> None:
        """Raise the problem of a strategy this deployment cannot run as configured."""
        if not needs_signals(config.strategy):
            return
        if not self.predictor_configured():
            raise StrategyUnavailableError(
                "ml_ensemble trades the predictor service's calls and no predictor is "
                "configured (PREDICTOR_URL). Use a rule strategy (GET /strategies).",
                field="strategy.name",
            )
        if config.data_frequency != "1d":
            raise ValidationProblemError(
                "ml_ensemble trades the predictor's daily calls: data_frequency must be 1d.",
                field="data_frequency",
            )

    async def ml_signals(self, request: RunConfig, loaded: LoadedBars) -> MlSignals | None:
        """Return the predictor's calls on the bars as targets (None for rule strategies).

        The first instrument's call range resolves the version (the active one unless
        given); the others are asked for that same version, and the run's stored config
        names it, so the run can be repeated after another version becomes active.
        """
        params = request.strategy.params
        if not isinstance(params, MlEnsembleParams):
            return None
        bars = loaded.bars
        start = pd.Timestamp(bars.index[0]).date()
        end = pd.Timestamp(bars.index[-1]).date()
        fields = [
            f"symbols[{i}]" if request.symbols is not None else "symbol"
            for i in range(bars.n_symbols)
        ]
        first = await self.predictor.calls(
            bars.symbols[0], params.model, params.version, start, end, fields={"symbol": fields[0]}
        )
        rest = await asyncio.gather(
            *(
                self.predictor.calls(
                    s, params.model, first.version, start, end, fields={"symbol": f}
                )
                for s, f in zip(bars.symbols[1:], fields[1:], strict=True)
            )
        )
        calls = [first, *rest]
        pinned = params.model_copy(update={"version": first.version})
        resolved = request.model_copy(
            update={"strategy": request.strategy.model_copy(update={"params": pinned})}
        )
        targets = np.column_stack([targets_from_calls(c, bars.index, params) for c in calls])
        digest = hashlib.sha256("|".join(c.digest() for c in calls).encode()).hexdigest()
        trained_on = await self.predictor.training_range(params.model, first.version)
        notes = ml_notes(calls, params, trained_on, (start, end))
        return MlSignals(resolved, ArraySignals(targets), digest, notes)

    async def load(self, config: RunConfig, *, single: bool = False) -> LoadedBars:
        """Check the strategy, then load the config's bars from the market service."""
        self.check_strategy(config)
        symbols = config.symbol_list
        if single and len(symbols) != 1:
            raise ValidationProblemError(
                "This analysis runs on one instrument: give `symbol`, not `symbols`.",
                field="symbols",
            )
        return await self.market.load(
            symbols,
            config.start_date,
            config.end_date,
            interval=config.data_frequency,
            adjusted=config.adjusted,
            symbols_field="symbols" if config.symbols is not None else None,
        )

    # ---- one backtest -------------------------------------------------------------------

    def backtest_needs_job(self, request: BacktestRequest) -> bool:
        """Return whether a backtest runs as a job (more instruments than the sync limit)."""
        return len(request.symbol_list) > self.settings.backtest_sync_max_symbols

    async def evaluate(
        self, request: RunConfig, loaded: LoadedBars, signals: MlSignals | None = None
    ) -> Evaluation:
        """Simulate a config on loaded bars (memoised: same config, same bars, same result)."""
        ev, pending = await self._start_evaluation(request, loaded, signals)
        if pending is None:
            return ev
        return await self._finish_evaluation(request, loaded, pending, signals)

    def _evaluation_key(
        self, request: RunConfig, loaded: LoadedBars, signals: MlSignals | None = None
    ) -> str:
        inputs = loaded.bars_hash if signals is None else f"{loaded.bars_hash}|{signals.digest}"
        return config_digest(stored_config(request), inputs)

    async def _start_evaluation(
        self, request: RunConfig, loaded: LoadedBars, signals: MlSignals | None = None
    ) -> tuple[Evaluation, asyncio.Task[Evaluation] | None]:
        """Return a memoised evaluation, or one without the mean's bootstrap interval and
        the task drawing it (a thread: the caller stores the rest meanwhile)."""
        hit = self._evaluations.get(self._evaluation_key(request, loaded, signals))
        if isinstance(hit, Evaluation):
            return hit, None
        # buy-and-hold depends on the bars and the costs only: one run serves every strategy
        twin = benchmark_config(request).model_dump(mode="json", exclude={"equity_points"})
        bench_key = config_digest({"benchmark": twin}, loaded.bars_hash)
        known = self._evaluations.get(bench_key)
        bars = loaded.bars

        def work() -> tuple[BenchmarkRun, Evaluation]:
            bench = known if isinstance(known, BenchmarkRun) else run_benchmark(request, bars)
            provider = signals.targets if signals is not None else None
            return bench, evaluate(
                request, bars, signals=provider, benchmark=bench, bootstrap=False
            )

        try:
            bench, ev = await asyncio.to_thread(work)
        except ValueError as e:  # the engine's own checks (shapes, settings)
            raise ValidationProblemError(f"The backtest cannot run: {e}", field="body") from e
        if self.settings.backtest_bars_ttl_s > 0:
            self._evaluations.set(bench_key, bench, self.settings.backtest_bars_ttl_s)
        rf, ppy = request.risk_free_rate, request.periods_per_year
        draw = asyncio.create_task(
            asyncio.to_thread(lambda: with_mean_ci(ev, mean_ci(ev, rf, ppy)))
        )
        return ev, draw

    async def _finish_evaluation(
        self,
        request: RunConfig,
        loaded: LoadedBars,
        pending: asyncio.Task[Evaluation],
        signals: MlSignals | None = None,
    ) -> Evaluation:
        """Wait for the bootstrap interval; memoise and return the complete evaluation."""
        ev = await pending
        if self.settings.backtest_bars_ttl_s > 0:
            key = self._evaluation_key(request, loaded, signals)
            self._evaluations.set(key, ev, self.settings.backtest_bars_ttl_s)
        return ev

    async def run_backtest(self, request: BacktestRequest) -> BacktestResult:
        """Load bars, simulate, store the run and its fills; return the stored answer."""
        request = await self.catalog.resolve(request)
        loaded = await self.load(request)
        return await self.store_backtest(request, loaded)

    async def store_backtest(self, request: BacktestRequest, loaded: LoadedBars) -> BacktestResult:
        """Simulate on loaded bars (an `ml_ensemble` run with the predictor's calls on
        them) and store the run; return its answer.

        A new evaluation's bootstrap interval is drawn in a thread while the run and its
        fills are written; the run's metrics are completed in the same transaction, so no
        reader ever sees them without it.
        """
        signals = await self.ml_signals(request, loaded)
        if signals is not None:  # the run stores the version it traded
            assert isinstance(signals.request, BacktestRequest)
            request = signals.request
        ev, pending = await self._start_evaluation(request, loaded, signals)
        try:
            run_id = uuid.uuid4()
            created = utcnow()
            dates = pd.DatetimeIndex(ev.dates)
            stored = {
                "version": STORED_VERSION,
                "start": dates[0].date().isoformat(),
                "end": dates[-1].date().isoformat(),
                "bars": len(dates),
                "metrics": ev.metrics.model_dump(mode="json"),
                "benchmark": ev.benchmark.model_dump(mode="json"),
                "trades": ev.trades.model_dump(mode="json"),
                "notes": [
                    *loaded.notes,
                    *ev.notes,
                    *(signals.notes if signals is not None else []),
                ],
            }
            series = repo.Series(ev.dates, ev.sim.equity, ev.benchmark_equity)
            config = stored_config(request)
            m = ev.metrics
            async with self.db.session() as session:
                await repo.insert_run(
                    session,
                    run_id=run_id,
                    created_at=created,
                    strategy=request.strategy.label,
                    symbols=loaded.bars.symbols,
                    start_date=request.start_date,
                    end_date=request.end_date,
                    initial_capital=request.initial_capital,
                    final_capital=m.final_capital,
                    headline={
                        "total_return": m.total_return,
                        "sharpe_ratio": m.sharpe_ratio,
                        "max_drawdown": m.max_drawdown,
                        "win_rate": m.win_rate,
                        "total_trades": m.total_trades,
                    },
                    configuration=config,
                    metrics=stored,
                    bars_hash=loaded.bars_hash,
                    series=series,
                    fills=ev.fills,
                )
                if pending is not None:
                    ev = await self._finish_evaluation(request, loaded, pending, signals)
                    pending = None
                    stored["metrics"] = ev.metrics.model_dump(mode="json")
                    await repo.update_run_metrics(session, run_id=run_id, metrics=stored)
                await session.commit()
        finally:
            if pending is not None:  # storing failed first: nobody waits for the interval
                pending.cancel()
        return self._answer(
            run_id=run_id,
            created=created,
            strategy=request.strategy.label,
            symbols=list(loaded.bars.symbols),
            bars_hash=loaded.bars_hash,
            config=config,
            stored=stored,
            series=series,
            points=request.equity_points,
        )

    @staticmethod
    def _answer(
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

    # ---- stored runs --------------------------------------------------------------------

    async def _row(self, run_id: uuid.UUID) -> Any:
        async with self.db.session() as session:
            row = await repo.load_run(session, run_id=run_id)
        if row is None or row.series is None or not row.metrics:
            raise RunNotFoundError(f"No stored backtest run {run_id}.", field="run_id")
        return row

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
            analysis = await self.analyses.row(run_id)
            if analysis is None:
                raise
        return self.analyses.answer(analysis, equity_points=equity_points)

    async def get_result(self, run_id: uuid.UUID, *, equity_points: int = 250) -> BacktestResult:
        """Return a stored run as `POST /backtest` answered it."""
        key = f"backtest:result:{run_id}:{equity_points}"
        cached, _ = await self.results.get(key)
        if cached is not None and not await self._deleted(run_id):
            return cached
        row = await self._row(run_id)
        answer = self._answer(
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
    ) -> RunList:
        """Return stored runs of every kind (or one) newest first, filtered by strategy and
        instrument."""
        async with self.db.session() as session:
            rows, total = await repo.list_runs(
                session,
                kind=kind,
                strategy=strategy,
                symbol=symbol.upper() if symbol else None,
                limit=limit,
                offset=offset,
            )
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

    async def get_trades(self, run_id: uuid.UUID, *, limit: int, offset: int) -> TradeList:
        """Return a page of a stored run's fills, oldest first."""
        await self._row(run_id)
        async with self.db.session() as session:
            rows, total = await repo.load_fills(session, run_id=run_id, limit=limit, offset=offset)
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
        return TradeList(
            run_id=run_id, trades=fills, page=Page.of(total, limit, offset, len(fills))
        )

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
        analysis = await self.analyses.row(run_id)
        if analysis is not None:
            png = await asyncio.to_thread(self.analyses.chart, analysis, width=width, height=height)
            await self.cache.set(
                key, base64.b64encode(png).decode(), self.settings.backtest_result_ttl_s
            )
            return png
        row = await self._row(run_id)
        async with self.db.session() as session:
            marks = await repo.load_fill_marks(session, run_id=run_id, most=MAX_CHART_FILLS)
        series = repo.decode_series(row.series)
        symbols = repo.split_symbols(row)
        m = row.metrics.get("metrics", {})
        b = row.metrics.get("benchmark", {})
        title = (
            f"{row.strategy_name} on {', '.join(symbols)}: "
            f"{_pct(m.get('total_return'))} (buy and hold {_pct(b.get('total_return'))}), "
            f"Sharpe {_num(m.get('sharpe_ratio'))}, max drawdown {_pct(m.get('max_drawdown'))}"
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

    # ---- long work: prepare (checks, bars), then run inline or as a job ------------------

    def _needs_job(self, cost: int, limit: int) -> bool:
        return cost > limit

    async def prepare_optimize(self, request: OptimizeRequest) -> Prepared:
        """Check a search request and load its bars."""
        if needs_signals(request.strategy):
            raise ValidationProblemError(
                "ml_ensemble has no parameters /optimize can sweep: its calls come from a "
                "trained model. Use POST /walk_forward (it trains a version per window on "
                "in-sample bars) or POST /backtest.",
                field="strategy.name",
            )
        request = await self.catalog.resolve(request)
        loaded = await self.load(request, single=True)
        n_bars = loaded.bars.n_bars
        definition, params = strategy_definition(request.strategy)
        # counted before anything is allocated: a refused search costs microseconds
        count = count_search(
            request, definition, params, method=request.method, n_trials=request.n_trials
        )
        if count.exact:
            self._check_trial_bars(count.trials, n_bars)
        plan = await asyncio.to_thread(
            plan_search,
            request,
            definition,
            params,
            method=request.method,
            n_trials=request.n_trials,
            seed=request.seed,
        )
        self._check_trial_bars(len(plan.combos), n_bars)
        cost = search_cost(len(plan.combos), n_bars, request.pbo_splits)
        needs = self._needs_job(cost, self.settings.backtest_sync_max_trial_bars)
        return Prepared("optimize", request, loaded, plan, None, cost, needs)

    def _check_trial_bars(self, trials: int, n_bars: int) -> None:
        """Refuse a search over the trial-bar limit (a 422 naming param_grid)."""
        if trials * n_bars > self.settings.backtest_max_trial_bars:
            raise ValidationProblemError(
                f"{trials:,} trials x {n_bars:,} bars is over the limit "
                f"of {self.settings.backtest_max_trial_bars:,} trial-bars (per-trial returns "
                "are kept for DSR and PBO). Coarsen param_grid or use method=random with "
                "fewer n_trials.",
                field="param_grid",
            )

    async def prepare_walk_forward(self, request: WalkForwardRequest) -> Prepared:
        """Check a walk-forward request and load its bars."""
        ml = needs_signals(request.strategy)
        if ml and request.param_grid:
            raise ValidationProblemError(
                "ml_ensemble is fitted by training, not by a param_grid: leave param_grid "
                "out (strategy.params.training says how each window trains).",
                field="param_grid",
            )
        if not ml and request.retrain_every != 1:
            raise ValidationProblemError(
                "retrain_every applies to ml_ensemble only; rule strategies refit their "
                "param_grid in every window.",
                field="retrain_every",
            )
        request = await self.catalog.resolve(request)
        loaded = await self.load(request, single=True)
        windows = check_windows(loaded.bars.n_bars, request)
        if ml:  # training takes seconds to minutes per window: always a job
            return Prepared("walk_forward", request, loaded, None, None, len(windows), True)
        plan = None
        if request.param_grid:
            definition, params = strategy_definition(request.strategy)
            count = count_search(request, definition, params)
            if count.exact:
                self._check_walk_cost(windows, count.trials)
            plan = await asyncio.to_thread(
                plan_search,
                request,
                definition,
                params,
                require_grid=True,
            )
        trials = len(plan.combos) if plan else 1
        cost = self._check_walk_cost(windows, trials)
        needs = self._needs_job(cost, self.settings.backtest_sync_max_trial_bars)
        return Prepared("walk_forward", request, loaded, plan, None, cost, needs)

    def _check_walk_cost(self, windows: list[tuple[int, int, int, int]], trials: int) -> int:
        """Return a walk-forward's trial-bars; refuse it over the limit (422 param_grid)."""
        cost = sum(trials * (tr_end - lo) + (te_end - tr_end) for lo, tr_end, _, te_end in windows)
        if cost > self.settings.backtest_max_trial_bars * 10:
            raise ValidationProblemError(
                f"{len(windows)} windows x {trials:,} trials is too much work ({cost:,} "
                "trial-bars); coarsen param_grid or lengthen test_period.",
                field="param_grid",
            )
        return cost

    async def prepare_monte_carlo(self, request: MonteCarloRequest) -> Prepared:
        """Find (or run and store) the run to resample."""
        if (request.run_id is None) == (request.config is None):
            raise ValidationProblemError(
                "Give exactly one of `run_id` (a stored run) or `config` (a backtest to run).",
                field="run_id",
            )
        if request.config is not None:
            try:
                run_id = (await self.run_backtest(request.config)).run_id
            except AppError as e:  # name the field as this request has it: config.<field>
                if e.field and e.field != "body" and not e.field.startswith("config"):
                    e.field = f"config.{e.field}"
                raise
        else:
            assert request.run_id is not None
            run_id = request.run_id
        source = await self.source(run_id)
        cost = steps(source, request.n_runs)
        needs = self._needs_job(cost, self.settings.backtest_sync_max_mc_steps)
        return Prepared("monte_carlo", request, None, None, source, cost, needs)

    async def source(self, run_id: uuid.UUID) -> Source:
        """Return a stored run's bar returns and trade returns (a walk-forward's stitched
        out-of-sample returns)."""
        analysis = await self.analyses.row(run_id)
        if analysis is not None:
            return self.analyses.source(analysis)
        row = await self._row(run_id)
        async with self.db.session() as session:
            trade_returns = await repo.load_trade_returns(session, run_id=run_id)
        series = repo.decode_series(row.series)
        initial = float(row.initial_capital)
        return Source(
            run_id=run_id,
            returns=returns_from_equity(series.equity, initial),
            trade_returns=trade_returns,
            total_return=float(series.equity[-1] / initial - 1.0),
            max_drawdown=drawdowns(series.equity, initial).max_drawdown,
        )

    async def run_prepared(
        self, prepared: Prepared, runner: Runner | None = None
    ) -> OptimizeResult | WalkForwardResult | MonteCarloResult:
        """Run prepared work on runner (a job's context), or inline."""
        runner = runner or Inline()
        if prepared.work == "monte_carlo":
            assert prepared.source is not None
            return await resample(prepared.request, prepared.source, runner)
        loaded = prepared.loaded
        assert loaded is not None
        request = prepared.request
        spec = request.to_spec()
        if prepared.work == "optimize":
            assert prepared.plan is not None
            years = calendar_years(loaded.bars.index)
            searched = await optimize(
                request, prepared.plan, loaded.bars, loaded.bars_hash, spec, years, runner
            )
            return await self.analyses.store_optimization(request, loaded, searched)
        full = full_request(request)  # the whole stitched equity, stored for chart and MC
        if needs_signals(request.strategy):
            walked = await ml_walk_forward(
                full, loaded.bars, loaded.bars_hash, spec, runner, self.predictor
            )
        else:
            walked = await walk_forward(
                full, prepared.plan, loaded.bars, loaded.bars_hash, spec, runner
            )
        return await self.analyses.store_walk_forward(request, loaded, walked)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2f}"
