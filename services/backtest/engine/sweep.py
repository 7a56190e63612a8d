"""Parameter sweeps: many single-symbol backtests in ``prange``, one stats row per trial.

Every trial runs ``fast.simulate_one_nb`` (the rules of a single backtest, in registers).
Indicators are computed once per distinct window by the caller and shared by every trial
that uses them. Besides the statistics, each trial leaves the sums of its bar returns and
of their squares over ``n_blocks`` blocks (and the leading remainder): everything the
Deflated Sharpe Ratio and the PBO's CSCV need, without a (trials x bars) returns matrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from services.backtest.engine.fast import N_STATS, simulate_one_nb


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def sweep_targets_nb(open_, high, low, close, targets, atr, specs, rf, keep_returns, n_blocks):
    """Backtest every row of ``targets`` (k, n) on one symbol's bars (n,).

    ``specs`` is a one-element ``core.SPEC_DTYPE`` array (a record argument does not pass
    into a ``prange`` body). Returns (stats (k, N_STATS), returns (k, n) when
    ``keep_returns`` else (k, 0), block sums (k, 2, n_blocks + 1) as ``simulate_one_nb``).
    """
    k, n = targets.shape
    stats = np.empty((k, N_STATS))
    returns = np.empty((k, n if keep_returns else 0))
    blocks = np.empty((k, 2, n_blocks + 1))
    for i in prange(k):
        simulate_one_nb(
            open_,
            high,
            low,
            close,
            targets[i],
            close,
            close,
            False,
            atr,
            specs[0],
            rf,
            stats[i],
            returns[i],
            blocks[i],
        )
    return stats, returns, blocks


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def sweep_crossover_nb(
    open_, high, low, close, lines, fast_idx, slow_idx, atr, specs, rf, keep_returns, n_blocks
):
    """Backtest a line crossover for every (fast, slow) pair of row indices into ``lines``.

    ``lines`` (w, n) holds each distinct window's average once; trial ``i`` trades the
    crossovers of ``lines[fast_idx[i]]`` over ``lines[slow_idx[i]]``. Returns as
    ``sweep_targets_nb``.
    """
    k = fast_idx.shape[0]
    n = close.shape[0]
    stats = np.empty((k, N_STATS))
    returns = np.empty((k, n if keep_returns else 0))
    blocks = np.empty((k, 2, n_blocks + 1))
    for i in prange(k):
        simulate_one_nb(
            open_,
            high,
            low,
            close,
            close,
            lines[fast_idx[i]],
            lines[slow_idx[i]],
            True,
            atr,
            specs[0],
            rf,
            stats[i],
            returns[i],
            blocks[i],
        )
    return stats, returns, blocks
