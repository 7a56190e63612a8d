"""Parameter sweeps: many single-symbol backtests in ``prange``, one stats row per trial.

Every trial runs a variant of ``fast.simulate_one_nb`` (the rules of a single backtest, in
registers). Indicators are computed once per distinct window by the caller and shared by
every trial that uses them. Besides the statistics, each trial leaves the sums of its bar
returns and of their squares over ``n_blocks`` blocks (and the leading remainder):
everything the Deflated Sharpe Ratio and the PBO's CSCV need, without a (trials x bars)
returns matrix.

Each sweep exists with and without stop-loss/take-profit exits (``sweep_crossover_nb(stops)``
returns the kernel), each calling only its own variant of the single-symbol kernel: a sweep
compiles (and loads from numba's cache) just the variant it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from services.backtest.engine.fast import (
    N_STATS,
    simulate_lines_nb,
    simulate_lines_stops_nb,
    simulate_targets_nb,
    simulate_targets_stops_nb,
)
from services.backtest.engine.postfix import run_rules_nb
from services.backtest.engine.signals import rules_target_into_nb


def _targets_sweep(stops: bool) -> Any:
    """Return the target-matrix sweep for specs with (or without) stops."""

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def sweep_targets(open_, high, low, close, targets, atr, specs, rf, keep_returns, n_blocks):
        """Backtest every row of ``targets`` (k, n) on one symbol's bars (n,).

        ``specs`` is a one-element ``core.SPEC_DTYPE`` array (a record argument does not
        pass into a ``prange`` body). Returns (stats (k, N_STATS), returns (k, n) when
        ``keep_returns`` else (k, 0), block sums (k, 2, n_blocks + 1) as
        ``simulate_one_nb``).
        """
        k, n = targets.shape
        stats = np.empty((k, N_STATS))
        returns = np.empty((k, n if keep_returns else 0))
        blocks = np.empty((k, 2, n_blocks + 1))
        for i in prange(k):
            args = (open_, high, low, close, targets[i], close, close, atr, specs[0], rf)
            if stops:  # a closure constant: numba compiles only the branch taken
                simulate_targets_stops_nb(*args, stats[i], returns[i], blocks[i])
            else:
                simulate_targets_nb(*args, stats[i], returns[i], blocks[i])
        return stats, returns, blocks

    return sweep_targets


def _crossover_sweep(stops: bool) -> Any:
    """Return the line-crossover sweep for specs with (or without) stops."""

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def sweep_crossover(
        open_, high, low, close, lines, fast_idx, slow_idx, atr, specs, rf, keep_returns, n_blocks
    ):
        """Backtest a line crossover for every (fast, slow) pair of row indices into ``lines``.

        ``lines`` (w, n) holds each distinct window's average once; trial ``i`` trades the
        crossovers of ``lines[fast_idx[i]]`` over ``lines[slow_idx[i]]``. Returns as the
        target sweep.
        """
        k = fast_idx.shape[0]
        n = close.shape[0]
        stats = np.empty((k, N_STATS))
        returns = np.empty((k, n if keep_returns else 0))
        blocks = np.empty((k, 2, n_blocks + 1))
        for i in prange(k):
            args = (open_, high, low, close, close, lines[fast_idx[i]], lines[slow_idx[i]])
            if stops:
                simulate_lines_stops_nb(*args, atr, specs[0], rf, stats[i], returns[i], blocks[i])
            else:
                simulate_lines_nb(*args, atr, specs[0], rf, stats[i], returns[i], blocks[i])
        return stats, returns, blocks

    return sweep_crossover


def _rules_sweep(stops: bool) -> Any:
    """Return the postfix-rules sweep for specs with (or without) stops."""

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def sweep_rules(
        open_,
        high,
        low,
        close,
        leaves,
        rows,
        params,
        ready,
        ops,
        operands,
        consts,
        slots,
        n_rules,
        depth,
        chunk,
        atr,
        specs,
        rf,
        keep_returns,
        n_blocks,
    ):
        """Backtest trial ``i``'s rules: ``postfix.run_rules_nb`` on ``leaves`` through
        ``rows[i]`` and ``params[i]``, targets from ``ready[i]`` on, then the target sweep's
        simulation. Trials go in chunks of ``chunk``, each chunk with its own stack and
        rule rows. Returns as the target sweep."""
        k = rows.shape[0]
        n = close.shape[0]
        stats = np.empty((k, N_STATS))
        returns = np.empty((k, n if keep_returns else 0))
        blocks = np.empty((k, 2, n_blocks + 1))
        n_chunks = (k + chunk - 1) // chunk
        for c in prange(n_chunks):
            scratch = np.empty((depth, n))
            kinds = np.empty(depth, dtype=np.int64)
            refs = np.empty(depth, dtype=np.int64)
            values = np.empty(depth)
            rules = np.zeros((n_rules + 1, n), dtype=np.bool_)  # the last row stays false
            target = np.empty(n)
            for i in range(c * chunk, min(k, (c + 1) * chunk)):
                run_rules_nb(
                    ops,
                    operands,
                    consts,
                    params[i],
                    rows[i],
                    leaves,
                    scratch,
                    kinds,
                    refs,
                    values,
                    rules,
                )
                rules_target_into_nb(
                    rules[slots[0]],
                    rules[slots[1]],
                    rules[slots[2]],
                    rules[slots[3]],
                    ready[i],
                    target,
                )
                args = (open_, high, low, close, target, close, close, atr, specs[0], rf)
                if stops:
                    simulate_targets_stops_nb(*args, stats[i], returns[i], blocks[i])
                else:
                    simulate_targets_nb(*args, stats[i], returns[i], blocks[i])
        return stats, returns, blocks

    return sweep_rules


_TARGET_SWEEPS = (_targets_sweep(False), _targets_sweep(True))
_CROSSOVER_SWEEPS = (_crossover_sweep(False), _crossover_sweep(True))
_RULES_SWEEPS = (_rules_sweep(False), _rules_sweep(True))


def sweep_targets_nb(stops: bool) -> Any:
    """Return the target-matrix sweep kernel for specs with (or without) stops."""
    return _TARGET_SWEEPS[bool(stops)]


def sweep_crossover_nb(stops: bool) -> Any:
    """Return the line-crossover sweep kernel for specs with (or without) stops."""
    return _CROSSOVER_SWEEPS[bool(stops)]


def sweep_rules_nb(stops: bool) -> Any:
    """Return the postfix-rules sweep kernel for specs with (or without) stops."""
    return _RULES_SWEEPS[bool(stops)]
