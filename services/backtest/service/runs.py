"""The backtest service's runs: check a strategy, load its bars, simulate (memoised) and
store the run and its fills.

An `ml_ensemble` run trades the predictor service's calls (`ml_signals`); the predictor
client is made on first use and shared with the analyses (its walk-forward trains there).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import numpy as np
import pandas as pd

from services.backtest import repository as repo
from services.backtest.catalog import StrategyCatalog, needs_signals
from services.backtest.market import LoadedBars, MarketBars
from services.backtest.reports import (
    BenchmarkRun,
    Evaluation,
    benchmark_config,
    evaluate,
    mean_ci,
    run_benchmark,
    with_mean_ci,
)
from services.backtest.schemas import BacktestRequest, BacktestResult, RunConfig
from services.backtest.service.common import (
    MlSignals,
    StrategyUnavailableError,
    ml_notes,
    run_answer,
)
from services.backtest.settings import BacktestSettings
from services.backtest.signals import Predictor, targets_from_calls
from services.backtest.strategies import ArraySignals, MlEnsembleParams
from shared.cache import LRUCache
from shared.db import Database
from shared.errors import ValidationProblemError
from shared.http import local_app
from shared.peers import peer_client
from shared.tables import utcnow

STORED_VERSION = 1


def config_digest(config: dict[str, Any], bars_hash: str) -> str:
    """Return a key naming one configuration on one set of bars."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{text}|{bars_hash}".encode()).hexdigest()


def stored_config(request: RunConfig) -> dict[str, Any]:
    """Return the configuration stored with a run: every field, defaults filled in."""
    return request.model_dump(mode="json", exclude={"equity_points"})


class BacktestRuns:
    """One backtest at a time: its inputs checked and loaded, simulated, stored."""

    def __init__(
        self,
        *,
        db: Database,
        market: MarketBars,
        settings: BacktestSettings,
        predictor: Predictor | None = None,
    ) -> None:
        self.db = db
        self.market = market
        self.settings = settings
        self._evaluations = LRUCache(maxsize=64, max_bytes=256 * 2**20)
        self._predictor = predictor
        self.catalog = StrategyCatalog(db, self.predictor_configured)

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

    async def aclose(self) -> None:
        """Close the predictor client, if one was made."""
        if self._predictor is not None:
            await self._predictor.aclose()

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
        return run_answer(
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
