"""The backtest service's long work: a search, a walk-forward or a Monte Carlo is prepared
first (inputs checked, bars loaded, its cost counted: every bad input is a 4xx before
anything is accepted), then run inline or as a job: `Prepared.needs_job` says which.
Every search and walk-forward is stored (`services.backtest.analyses`).
"""

from __future__ import annotations

import asyncio
import uuid

from services.backtest import repository as repo
from services.backtest.analyses import Analyses, full_request
from services.backtest.catalog import needs_signals
from services.backtest.config import strategy_definition
from services.backtest.grid import count_search, plan_search
from services.backtest.metrics import calendar_years, drawdowns, returns_from_equity
from services.backtest.mlwalk import ml_walk_forward
from services.backtest.optimize import Inline, Runner, optimize, search_cost
from services.backtest.resampling import Source, resample, steps
from services.backtest.schemas import (
    MonteCarloRequest,
    MonteCarloResult,
    OptimizeRequest,
    OptimizeResult,
    WalkForwardRequest,
    WalkForwardResult,
)
from services.backtest.service.common import Prepared, load_row
from services.backtest.service.runs import BacktestRuns
from services.backtest.walkforward import check_windows, walk_forward
from shared.errors import AppError, ValidationProblemError


class BacktestAnalyses:
    """Searches, walk-forwards and Monte Carlo: prepared, then run inline or as a job."""

    def __init__(self, *, runs: BacktestRuns, stored: Analyses) -> None:
        self.runs = runs
        self.db = runs.db
        self.settings = runs.settings
        self.stored = stored

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
        request = await self.runs.catalog.resolve(request)
        loaded = await self.runs.load(request, single=True)
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
        request = await self.runs.catalog.resolve(request)
        loaded = await self.runs.load(request, single=True)
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
                run_id = (await self.runs.run_backtest(request.config)).run_id
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
        analysis = await self.stored.row(run_id)
        if analysis is not None:
            return self.stored.source(analysis)
        row = await load_row(self.db, run_id)
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
            return await self.stored.store_optimization(request, loaded, searched)
        full = full_request(request)  # the whole stitched equity, stored for chart and MC
        if needs_signals(request.strategy):
            walked = await ml_walk_forward(
                full, loaded.bars, loaded.bars_hash, spec, runner, self.runs.predictor
            )
        else:
            walked = await walk_forward(
                full, prepared.plan, loaded.bars, loaded.bars_hash, spec, runner
            )
        return await self.stored.store_walk_forward(request, loaded, walked)
