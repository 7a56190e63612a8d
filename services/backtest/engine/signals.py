"""Target-position kernels: indicator arrays in, a target per bar out (see ``core``).

A target at bar ``t`` is computed from values at bars ``<= t`` only; NaN means "no change".
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def crossover_target_into_nb(fast, slow, allow_short, out):
    """Write +1 where ``fast`` crosses above ``slow``, -1 (or 0) below, NaN elsewhere.

    A cross at ``t`` is backtesting.py's ``crossover``: ``fast[t-1] < slow[t-1]`` and
    ``fast[t] > slow[t]`` (strict both, so a NaN or a tie is no cross).
    """
    n = fast.shape[0]
    down = -1.0 if allow_short else 0.0
    out[0] = np.nan
    for t in range(1, n):
        a0 = fast[t - 1]
        b0 = slow[t - 1]
        a1 = fast[t]
        b1 = slow[t]
        if a0 < b0 and a1 > b1:
            out[t] = 1.0
        elif b0 < a0 and b1 > a1:
            out[t] = down
        else:
            out[t] = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def crossover_target_nb(fast, slow, allow_short):
    """Return the crossover targets of ``fast`` over ``slow`` (see the ``_into`` kernel)."""
    out = np.empty(fast.shape[0])
    crossover_target_into_nb(fast, slow, allow_short, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def mean_reversion_target_nb(close, rsi, upper, middle, lower, oversold, overbought, allow_short):
    """Return RSI + Bollinger mean-reversion targets from a state machine over the bars.

    Flat -> long when the close is below the lower band and RSI below ``oversold``; long ->
    flat when the close reaches the middle band. With ``allow_short``, flat -> short above
    the upper band with RSI above ``overbought``, short -> flat at the middle band. A bar
    that both exits one side and enters the other goes straight to the other side. The
    target is emitted only on the bar where the state changes.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    state = 0.0
    for t in range(n):
        c = close[t]
        new = state
        if (state > 0.0 and c >= middle[t]) or (state < 0.0 and c <= middle[t]):
            new = 0.0
        if new <= 0.0 and c < lower[t] and rsi[t] < oversold:
            new = 1.0
        elif new >= 0.0 and allow_short and c > upper[t] and rsi[t] > overbought:
            new = -1.0
        if new != state:
            out[t] = new
            state = new
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def rules_target_into_nb(entry_long, exit_long, entry_short, exit_short, ready, out):
    """Write targets from four boolean rules decided at each bar's close (bars >= ``ready``).

    The strategy's side moves as ``mean_reversion_target_nb``'s: long -> flat on
    ``exit_long``, short -> flat on ``exit_short``; then flat (or short) -> long on
    ``entry_long``, else flat (or long) -> short on ``entry_short``. A change is emitted on
    the bar it happens; an entry rule that holds while already on its side emits that side
    again, so the engine (which ignores a wish equal to its side) re-enters after a
    stop-loss or a warm-up, as backtesting.py's ``if not self.position and entry: buy()``.
    NaN elsewhere.
    """
    n = entry_long.shape[0]
    out[:] = np.nan
    state = 0
    for t in range(ready, n):
        el = entry_long[t]
        xl = exit_long[t]
        es = entry_short[t]
        xs = exit_short[t]
        if not (el | xl | es | xs):  # nothing holds: nothing changes (most bars); no branch each
            continue
        new = state
        if (state == 1 and xl) or (state == -1 and xs):
            new = 0
        if new <= 0 and el:
            new = 1
        elif new >= 0 and es:
            new = -1
        if new != state or (new == 1 and el) or (new == -1 and es):
            out[t] = new
        state = new


@njit(cache=True, nogil=True, error_model="numpy")
def rules_target_nb(entry_long, exit_long, entry_short, exit_short, ready):
    """Return the targets of four boolean rules (see ``rules_target_into_nb``)."""
    out = np.empty(entry_long.shape[0])
    rules_target_into_nb(entry_long, exit_long, entry_short, exit_short, ready, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def rules_targets_nb(rules, ready, out):
    """Write row ``i`` of ``out`` (k, n) from the rules ``rules[i]`` (k, 4, n), ready at
    ``ready[i]`` (a sweep's combinations in one call)."""
    for i in range(rules.shape[0]):
        r = rules[i]
        rules_target_into_nb(r[0], r[1], r[2], r[3], ready[i], out[i])
