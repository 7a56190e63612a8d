"""Monte Carlo resampling of a backtest: trade-order bootstrap and block bootstrap of returns.

Both kernels draw from numba's generator seeded once per call, so one seed gives one
answer. Each run yields a final return and a maximum drawdown of its compounded path.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def _path_stats_nb(eq, peak, mdd, x):
    """Compound one return into the path; return (equity, peak, max drawdown)."""
    eq *= 1.0 + x
    if eq > peak:
        peak = eq
    else:
        dd = eq / peak - 1.0
        if dd < mdd:
            mdd = dd
    return eq, peak, mdd


@njit(cache=True, nogil=True, error_model="numpy")
def bootstrap_trades_nb(trade_returns, n_runs, seed):
    """Resample the trades (with replacement, same count) n_runs times.

    ``trade_returns`` are each trade's pnl as a fraction of equity when it opened. Returns
    (final returns, max drawdowns), each (n_runs,).
    """
    np.random.seed(seed)
    k = trade_returns.shape[0]
    final = np.zeros(n_runs)
    mdds = np.zeros(n_runs)
    if k == 0:
        return final, mdds
    for r in range(n_runs):
        eq = 1.0
        peak = 1.0
        mdd = 0.0
        for _ in range(k):
            eq, peak, mdd = _path_stats_nb(eq, peak, mdd, trade_returns[np.random.randint(0, k)])
        final[r] = eq - 1.0
        mdds[r] = mdd
    return final, mdds


@njit(cache=True, nogil=True, error_model="numpy")
def block_bootstrap_nb(returns, n_runs, block, seed):
    """Rebuild the return series n_runs times from random circular blocks of ``block`` bars.

    Returns (final returns, max drawdowns), each (n_runs,).
    """
    np.random.seed(seed)
    n = returns.shape[0]
    final = np.zeros(n_runs)
    mdds = np.zeros(n_runs)
    if n == 0:
        return final, mdds
    for r in range(n_runs):
        eq = 1.0
        peak = 1.0
        mdd = 0.0
        t = 0
        while t < n:
            start = np.random.randint(0, n)
            stop = min(block, n - t)
            for b in range(stop):
                i = start + b
                if i >= n:
                    i -= n
                eq, peak, mdd = _path_stats_nb(eq, peak, mdd, returns[i])
            t += stop
        final[r] = eq - 1.0
        mdds[r] = mdd
    return final, mdds
