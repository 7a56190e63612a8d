"""Compile the engine's kernels before the first request, not during it.

numba compiles a kernel on its first call: a fresh install's first backtest took 9.9 s over
HTTP and its first `/optimize` more than 10 s. :func:`warm_kernels` runs the paths requests
take on synthetic bars: a backtest of every rule strategy with and without stops (the
simulation, its metrics and bootstrap), a two-trial optimisation of a crossover and of a
target strategy (the parallel sweeps, the DSR and the PBO's CSCV) and a Monte Carlo. The
kernels are ``cache=True``: the compile happens once per install, later starts only load
the cached code (0.2 s here once loaded; 2.8 s in a fresh process on a busy machine,
against 177 s to compile).

The service runs it in a background thread at start (`shared.warmup.start_warming`): a
request that calls a kernel meanwhile waits for the warm-up instead of compiling again.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from services.backtest.engine.analysis import monte_carlo
from services.backtest.engine.runner import Bars
from services.backtest.metrics import calendar_years
from services.backtest.optimize import TrialBatch, search
from services.backtest.reports import evaluate
from services.backtest.schemas import BacktestRequest
from services.backtest.strategies import STRATEGIES

WARM_BARS = 300


def synthetic_bars(n: int = WARM_BARS, seed: int = 0) -> Bars:
    """Return one symbol's n daily bars of a seeded random walk (business days from 2020)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = close * (1.0 + rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.003, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.003, n)))
    index = pd.bdate_range("2020-01-01", periods=n)
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=index)
    return Bars.from_frames({"WARM": frame})


def warm_kernels() -> float:
    """Run every kernel family once on synthetic bars; return the seconds it took."""
    t0 = time.perf_counter()
    bars = synthetic_bars()
    dates = {"start_date": "2020-01-01", "end_date": "2021-03-31"}
    specs = []
    for stops in ({}, {"stop_loss": 0.05, "take_profit": 0.1}):
        for name, strategy in STRATEGIES.items():
            if strategy.needs_signals:  # the model's calls: the same simulation kernels
                continue
            body = {"symbol": "WARM", **dates, "strategy": {"name": name}, **stops}
            request = BacktestRequest.model_validate(body)
            evaluate(request, bars)
        specs.append(request.to_spec())
    years = calendar_years(bars.index)
    searches: dict[str, list[dict[str, float | int | bool]]] = {
        "sma_crossover": [{"fast": 5, "slow": 20}, {"fast": 10, "slow": 30}],
        "mean_reversion": [{"rsi_period": 10}, {"rsi_period": 14}],
    }
    for name, combos in searches.items():
        for spec in specs:
            task = TrialBatch(
                bars=bars,
                strategy=name,
                fixed=STRATEGIES[name].parse(None).model_dump(),
                combos=combos,
                spec=spec,
                risk_free_rate=0.0,
                keep_returns=False,
                n_blocks=8,
            )
            search(task, "sharpe_ratio", True, years)
    returns = np.diff(bars.close[:, 0]) / bars.close[:-1, 0]
    monte_carlo(returns[:20], returns, n_runs=10)
    return time.perf_counter() - t0
