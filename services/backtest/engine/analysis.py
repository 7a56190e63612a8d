"""Python wrappers of the batch kernels: parameter sweeps and Monte Carlo resampling."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import get_num_threads, parallel_chunksize

from services.backtest.engine.core import SPEC_DTYPE, SimSpec
from services.backtest.engine.fast import (
    N_STATS,
    STAT_NAMES,
    simulate_lines_nb,
    simulate_lines_stops_nb,
    simulate_targets_nb,
    simulate_targets_stops_nb,
)
from services.backtest.engine.montecarlo import block_bootstrap_nb, bootstrap_trades_nb
from services.backtest.engine.postfix import RuleCode, RuleInputs
from services.backtest.engine.runner import Bars
from services.backtest.engine.sweep import sweep_crossover_nb, sweep_rules_nb, sweep_targets_nb
from shared.quant.kernels import ema_nb, sma_nb


@dataclass(frozen=True)
class SweepResult:
    """One statistics row per trial (columns ``fast.STAT_NAMES``), and optionally returns.

    ``blocks`` (k, 2, S + 1) holds each trial's sums of bar returns and of their squares:
    column 0 over the leading bars, columns 1..S over the S blocks of ``n // S`` bars that
    the PBO's CSCV splits (``fast.simulate_one_nb``); S is 0 unless blocks were asked for.
    """

    params: Sequence[Mapping[str, float]]  # one per trial
    stats: np.ndarray  # (k, N_STATS)
    returns: np.ndarray  # (k, n) per-bar returns, or (k, 0) when not kept
    blocks: np.ndarray  # (k, 2, S + 1) sums of returns and squared returns

    def column(self, name: str) -> np.ndarray:
        """Return one statistic for every trial."""
        return self.stats[:, STAT_NAMES.index(name)]

    def frame(self) -> pd.DataFrame:
        """Return parameters and statistics as one frame, a row per trial."""
        return pd.concat(
            [pd.DataFrame(list(self.params)), pd.DataFrame(self.stats, columns=list(STAT_NAMES))],
            axis=1,
        )


def _one_symbol(bars: Bars) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the single symbol's (open, high, low, close) as contiguous vectors."""
    if bars.n_symbols != 1:
        raise ValueError("sweeps run on one symbol")
    o, h, lo, c = (
        np.ascontiguousarray(a[:, 0]) for a in (bars.open, bars.high, bars.low, bars.close)
    )
    return o, h, lo, c


def _atr_vector(bars: Bars, atr: np.ndarray | None) -> np.ndarray:
    """Return the ATR vector (NaN when not given)."""
    if atr is None:
        return np.full(bars.n_bars, np.nan)
    return np.ascontiguousarray(np.asarray(atr, dtype=np.float64).reshape(-1))


def _spec_array(spec: SimSpec) -> np.ndarray:
    """Return ``spec`` as the one-element record array the prange kernels take."""
    return np.array([spec], dtype=SPEC_DTYPE)


def _outputs(
    k: int, n: int, keep_returns: bool, n_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return empty (stats, returns, blocks) for k trials of n bars, as the sweeps make."""
    return (
        np.empty((k, N_STATS)),
        np.empty((k, n if keep_returns else 0)),
        np.empty((k, 2, n_blocks + 1)),
    )


def _has_stops(spec: SimSpec) -> bool:
    """Return whether the spec has a stop-loss or a take-profit."""
    return not (math.isnan(spec.stop_loss) and math.isnan(spec.take_profit))


def _chunk(k: int) -> int:
    """Return how many trials a sweep thread takes at a time: about 8 turns per thread.

    Threads take chunks as they finish (not a fixed share each), so a thread that other
    work on the machine holds up leaves its trials to the others; trials differ in cost
    too (fast lines trade more).
    """
    return max(1, k // (8 * get_num_threads()))


def _block_count(n_blocks: int) -> int:
    """Return ``n_blocks`` checked (0: only the totals)."""
    if n_blocks < 0:
        raise ValueError("n_blocks: 0 or more")
    return int(n_blocks)


def per_period_rate(annual: float, periods_per_year: float) -> float:
    """Return the per-bar risk-free return of an annual rate (simple division, as the seed)."""
    return annual / periods_per_year


def sweep_crossover(
    bars: Bars,
    pairs: Iterable[tuple[int, int]],
    spec: SimSpec,
    *,
    risk_free_rate: float = 0.0,
    keep_returns: bool = False,
    n_blocks: int = 0,
    line: str = "sma",
    atr: np.ndarray | None = None,
    params: Sequence[Mapping[str, float]] | None = None,
) -> SweepResult:
    """Backtest a moving-average crossover for every (fast, slow) pair, lines computed once.

    ``params`` names the trials in the result (default: a {"fast", "slow"} dict per pair).
    """
    o, h, lo, c = _one_symbol(bars)
    pair_list = [(int(f), int(s)) for f, s in pairs]
    if not pair_list:
        raise ValueError("pairs: no combination to run")
    kernels = {"sma": sma_nb, "ema": ema_nb}
    if line not in kernels:
        raise ValueError(f"line: one of {', '.join(kernels)}")
    kernel = kernels[line]
    windows = sorted({w for p in pair_list for w in p})
    row = {w: i for i, w in enumerate(windows)}
    lines = np.empty((len(windows), c.shape[0]))
    for w, i in row.items():
        lines[i] = kernel(c, w)
    fast_idx = np.array([row[f] for f, _ in pair_list], dtype=np.int64)
    slow_idx = np.array([row[s] for _, s in pair_list], dtype=np.int64)
    rf = per_period_rate(risk_free_rate, spec.periods_per_year)
    atr_v = _atr_vector(bars, atr)
    if len(pair_list) == 1:  # one trial: not worth starting the threads
        stats, returns, blocks = _outputs(1, c.shape[0], keep_returns, _block_count(n_blocks))
        one = simulate_lines_stops_nb if _has_stops(spec) else simulate_lines_nb
        fast, slow = lines[fast_idx[0]], lines[slow_idx[0]]
        one(o, h, lo, c, c, fast, slow, atr_v, spec, rf, stats[0], returns[0], blocks[0])
    else:
        with parallel_chunksize(_chunk(len(pair_list))):
            stats, returns, blocks = sweep_crossover_nb(_has_stops(spec))(
                o,
                h,
                lo,
                c,
                lines,
                fast_idx,
                slow_idx,
                atr_v,
                _spec_array(spec),
                rf,
                keep_returns,
                _block_count(n_blocks),
            )
    if params is None:
        params = [{"fast": f, "slow": s} for f, s in pair_list]
    return SweepResult(params, stats, returns, blocks)


def sweep_targets(
    bars: Bars,
    targets: np.ndarray,
    spec: SimSpec,
    params: Sequence[dict[str, float]] | None = None,
    *,
    risk_free_rate: float = 0.0,
    keep_returns: bool = False,
    n_blocks: int = 0,
    atr: np.ndarray | None = None,
) -> SweepResult:
    """Backtest every row of a (k, n) target matrix on one symbol."""
    o, h, lo, c = _one_symbol(bars)
    t = np.ascontiguousarray(np.asarray(targets, dtype=np.float64))
    if t.ndim != 2 or t.shape[1] != c.shape[0]:
        raise ValueError(f"targets: expected (k, {c.shape[0]}), got {t.shape}")
    rf = per_period_rate(risk_free_rate, spec.periods_per_year)
    atr_v = _atr_vector(bars, atr)
    if t.shape[0] == 1:  # one trial: not worth starting the threads
        stats, returns, blocks = _outputs(1, c.shape[0], keep_returns, _block_count(n_blocks))
        one = simulate_targets_stops_nb if _has_stops(spec) else simulate_targets_nb
        one(o, h, lo, c, t[0], c, c, atr_v, spec, rf, stats[0], returns[0], blocks[0])
    else:
        with parallel_chunksize(_chunk(t.shape[0])):
            stats, returns, blocks = sweep_targets_nb(_has_stops(spec))(
                o, h, lo, c, t, atr_v, _spec_array(spec), rf, keep_returns, _block_count(n_blocks)
            )
    names: list[dict[str, float]] = (
        list(params) if params is not None else [{"trial": float(i)} for i in range(t.shape[0])]
    )
    return SweepResult(names, stats, returns, blocks)


def sweep_rules(
    bars: Bars,
    code: RuleCode,
    inputs: RuleInputs,
    spec: SimSpec,
    params: Sequence[Mapping[str, float]],
    *,
    risk_free_rate: float = 0.0,
    keep_returns: bool = False,
    n_blocks: int = 0,
    atr: np.ndarray | None = None,
) -> SweepResult:
    """Backtest every trial of a postfix rule program on one symbol (``postfix``): each
    trial's rules, targets and simulation in one ``prange`` pass, no (k, n) matrix."""
    o, h, lo, c = _one_symbol(bars)
    k = inputs.rows.shape[0]
    if inputs.leaves.ndim != 2 or inputs.leaves.shape[1] != c.shape[0]:
        raise ValueError(f"leaves: expected (rows, {c.shape[0]}), got {inputs.leaves.shape}")
    if inputs.params.shape[0] != k or inputs.ready.shape[0] != k or k == 0:
        raise ValueError("rows, params and ready: one row per trial, at least one trial")
    rf = per_period_rate(risk_free_rate, spec.periods_per_year)
    with parallel_chunksize(1):  # chunks of trials taken as threads free up
        stats, returns, blocks = sweep_rules_nb(_has_stops(spec))(
            o,
            h,
            lo,
            c,
            inputs.leaves,
            inputs.rows,
            inputs.params,
            inputs.ready,
            code.ops,
            code.operands,
            code.consts,
            code.slots,
            code.n_rules,
            code.depth,
            _chunk(k),
            _atr_vector(bars, atr),
            _spec_array(spec),
            rf,
            keep_returns,
            _block_count(n_blocks),
        )
    return SweepResult(params, stats, returns, blocks)


@dataclass(frozen=True)
class Distribution:
    """Monte Carlo outcome of one resampling method."""

    final_return: np.ndarray  # (n_runs,)
    max_drawdown: np.ndarray  # (n_runs,)
    confidence: float

    def summary(self) -> dict[str, float | dict[str, float]]:
        """Return percentiles, probability of loss, VaR and CVaR of the final return."""
        q = 1.0 - self.confidence
        cut = float(np.quantile(self.final_return, q))
        tail = self.final_return[self.final_return <= cut]
        pct = (5, 25, 50, 75, 95)
        return {
            "final_return": {f"p{p}": float(np.percentile(self.final_return, p)) for p in pct},
            "max_drawdown": {f"p{p}": float(np.percentile(self.max_drawdown, p)) for p in pct},
            "probability_of_loss": float(np.mean(self.final_return < 0.0)),
            "var": -cut,
            "cvar": -float(tail.mean()) if tail.size else -cut,
        }


@dataclass(frozen=True)
class MonteCarloResult:
    """Both resampling methods' distributions and the settings that produced them."""

    trades: Distribution
    blocks: Distribution
    n_runs: int
    block: int
    seed: int


def monte_carlo(
    trade_returns: np.ndarray,
    returns: np.ndarray,
    *,
    n_runs: int = 1000,
    block: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
) -> MonteCarloResult:
    """Resample trades (order bootstrap) and per-bar returns (circular block bootstrap)."""
    if n_runs < 1:
        raise ValueError("n_runs: at least 1")
    if not 0.5 <= confidence < 1:
        raise ValueError("confidence: in [0.5, 1)")
    tr = np.ascontiguousarray(np.asarray(trade_returns, dtype=np.float64))
    r = np.ascontiguousarray(np.asarray(returns, dtype=np.float64))
    if block is None:
        block = max(1, round(r.shape[0] ** (1.0 / 3.0)))  # the usual n^(1/3) rule
    if block < 1:
        raise ValueError("block: at least 1")
    f1, d1 = bootstrap_trades_nb(tr, n_runs, seed)
    f2, d2 = block_bootstrap_nb(r, n_runs, block, seed)
    return MonteCarloResult(
        trades=Distribution(f1, d1, confidence),
        blocks=Distribution(f2, d2, confidence),
        n_runs=n_runs,
        block=block,
        seed=seed,
    )


def sma_pairs(fast: range, slow: range) -> list[tuple[int, int]]:
    """Return every (fast, slow) pair with fast < slow."""
    return [(f, s) for f in fast for s in slow if f < s]
