"""The single-symbol simulation the sweeps run: ``core.simulate_nb``'s rules, in registers.

A sweep runs thousands of backtests of one symbol, and only needs each one's statistics
(and, on request, its per-bar returns). This kernel keeps the whole state in scalars and
folds the statistics into the bar loop, so a 10-year daily backtest costs a few
microseconds. It applies exactly the rules of ``core.simulate_nb`` for one symbol, which a
property test holds it to (same equity, same counters, on random bars and settings).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from services.backtest.engine.core import commission_nb, order_shares_nb

# Columns of a trial's statistics row.
STAT_TOTAL_RETURN = 0
STAT_ANNUAL_RETURN = 1  # geometric, periods per year
STAT_VOLATILITY = 2  # annualised, sample std
STAT_SHARPE = 3  # annualised, excess over the per-period risk-free rate, sample std
STAT_SORTINO = 4  # empyrical's downside deviation (root mean square of negative excess)
STAT_MAX_DRAWDOWN = 5  # negative fraction
STAT_TRADES = 6
STAT_WIN_RATE = 7
STAT_EXPOSURE = 8  # fraction of bars ending with an open position
STAT_REJECTED = 9
STAT_FINAL_CAPITAL = 10
N_STATS = 11
STAT_NAMES = (
    "total_return",
    "annual_return",
    "volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "total_trades",
    "win_rate",
    "exposure",
    "rejected_orders",
    "final_capital",
)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _close_cash_nb(pos, quote, entry_fill, entry_comm, cash, spec):
    """Return (cash, pnl) after closing ``pos`` shares at ``quote`` (before slippage)."""
    shares = abs(pos)
    if pos > 0.0:
        fill = quote * (1.0 - spec.slippage)
        comm = commission_nb(shares, fill, spec)
        cash += shares * fill - comm
    else:
        fill = quote * (1.0 + spec.slippage)
        comm = commission_nb(shares, fill, spec)
        cash -= shares * fill + comm
    return cash, pos * (fill - entry_fill) - entry_comm - comm


@njit(cache=True, nogil=True, error_model="numpy")
def _execute_one_nb(d, quote, atr, cash, pos, entry_fill, entry_comm, sl, tp, spec):
    """Execute wish ``d`` at ``quote``: close what is open, then open side ``d`` (if not 0).

    Returns (cash, pos, entry_fill, entry_comm, sl, tp, closed, won, rejected). Kept out of
    line so the bar loop stays small enough for its state to live in registers.
    """
    closed = 0
    won = 0
    rejected = 0
    if pos != 0.0:
        cash, pnl = _close_cash_nb(pos, quote, entry_fill, entry_comm, cash, spec)
        pos = 0.0
        closed = 1
        won = 1 if pnl > 0.0 else 0
    if d != 0.0:
        fill = quote * (1.0 + d * spec.slippage)
        free = cash if cash > 0.0 else 0.0
        shares, _ = order_shares_nb(spec, fill, free, cash, atr, 1)
        if shares > 0.0:
            entry_comm = commission_nb(shares, fill, spec)
            if d > 0.0:
                cash -= shares * fill + entry_comm
            else:
                cash += shares * fill - entry_comm
            pos = d * shares
            entry_fill = fill
            sl = fill * (1.0 - d * spec.stop_loss)
            tp = fill * (1.0 + d * spec.take_profit)
        else:
            rejected = 1
    return cash, pos, entry_fill, entry_comm, sl, tp, closed, won, rejected


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _stop_quote_nb(pos, o, h, lo, sl, tp):
    """Return the quote at which a stop or take-profit exits this bar, NaN if none does."""
    if pos > 0.0:
        if lo <= sl:  # False for NaN (no stop)
            return o if o < sl else sl
        if h >= tp:
            return o if o > tp else tp
    else:
        if h >= sl:
            return o if o > sl else sl
        if lo <= tp:
            return o if o < tp else tp
    return np.nan


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _account_nb(eq, prev, rf, down, peak, floor, mdd, r1, r2, live):
    """Fold one bar's equity into the running statistics; return the bar's return and them.

    A wiped-out account (``prev`` 0) earns 0 from then on (``live``: the caller knows
    ``prev`` > 0). The drawdown is tracked without a division per bar: ``floor`` is the
    equity at which the drawdown would exceed ``mdd``.
    """
    r = eq / prev - 1.0 if live or prev > 0.0 else 0.0
    x = r - rf
    if x < 0.0:
        down += x * x
    if eq > peak:
        peak = eq
        floor = peak * (1.0 + mdd)
    elif eq < floor:
        mdd = eq / peak - 1.0
        floor = eq
    r1 += r
    r2 += r * r
    return r, down, peak, floor, mdd, r1, r2


def _simulator(use_lines: bool, any_stops: bool) -> Any:
    """Return ``simulate_one_nb``'s kernel for one kind of wish and of exits.

    ``use_lines`` and ``any_stops`` are closure constants, so numba compiles each variant
    with its branches folded away: the quiet-bar loop of a crossover without stops is then
    a third shorter than one that tests both at every bar. (Numba caches each variant apart:
    closure values are part of its cache key.)
    """

    @njit(cache=True, nogil=True, error_model="numpy")
    def simulate(
        open_, high, low, close, target, fast, slow, atr, spec, rf, stats, returns, blocks
    ):
        """Run one variant of ``simulate_one_nb`` (its arguments, less ``use_lines``)."""
        n = close.shape[0]
        keep = returns.shape[0] == n
        n_blocks = blocks.shape[1] - 1
        size = n // n_blocks if n_blocks > 0 else 0
        lead = n - size * n_blocks
        blocks[:] = 0.0
        on_close = spec.fill_on_close
        allow_short = spec.allow_short
        first = max(spec.warmup, 1 if use_lines else 0)
        cash = spec.initial_capital
        pos = 0.0
        entry_fill = 0.0
        entry_comm = 0.0
        entry_bar = -1
        sl = np.nan
        tp = np.nan
        pending = np.nan
        trades = 0
        wins = 0
        rejected = 0
        exposed = 0
        alive = True
        stopped = False  # the quiet loop left bar t to the full path
        # running statistics
        prev = spec.initial_capital
        peak = prev
        floor = prev
        mdd = 0.0
        down = 0.0
        r1 = 0.0  # running sums of the returns and of their squares
        r2 = 0.0
        column = 0
        column_end = lead
        eq = prev
        t = 0
        while t < n:
            while t == column_end and column < n_blocks:
                blocks[0, column] = r1  # cumulative: differenced at the end
                blocks[1, column] = r2
                column += 1
                column_end = lead + column * size
            if alive and pending != pending and t < n - 1 and not stopped:
                # Quiet bars, up to a block boundary or the last bar: the position is unchanged.
                # Stop at a bar with a stop touched, a fill at its close or equity <= 0 (the full
                # path takes it); a wish for the next open is noted and ends the run after its bar.
                # Unsigned indices: t >= 0, and LLVM then emits no negative-index wraparound.
                limit = n - 1 if column_end > n - 1 else column_end
                side = 1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)
                watch = any_stops and pos != 0.0
                start = t
                while t < limit:
                    u = np.uint64(t)
                    if watch and not (on_close and entry_bar >= t):
                        q = _stop_quote_nb(pos, open_[u], high[u], low[u], sl, tp)
                        if q == q:
                            stopped = True
                            break
                    if t >= first:
                        if use_lines:
                            w = np.uint64(t - 1)
                            v = np.nan
                            if fast[w] < slow[w] and fast[u] > slow[u]:
                                v = 1.0
                            elif slow[w] < fast[w] and slow[u] > fast[u]:
                                v = -1.0
                        else:
                            v = target[u]
                        if v == v:
                            d = 1.0 if v > 0.0 else (-1.0 if v < 0.0 and allow_short else 0.0)
                            if d != side:
                                if on_close:
                                    stopped = True
                                    break
                                pending = d
                                limit = t + 1  # this bar is quiet; the next one fills
                    e = cash + pos * close[u]
                    if e <= 0.0:
                        pending = np.nan
                        stopped = True
                        break
                    eq = e
                    r, down, peak, floor, mdd, r1, r2 = _account_nb(
                        eq, prev, rf, down, peak, floor, mdd, r1, r2, True
                    )
                    prev = eq
                    if keep:
                        returns[u] = r
                    t += 1
                if pos != 0.0:
                    exposed += t - start
                continue
            stopped = False
            # the full path: an event at bar t (or a wiped-out account)
            if alive:
                if pending == pending and not on_close:
                    cash, pos, entry_fill, entry_comm, sl, tp, c_, w_, r_ = _execute_one_nb(
                        pending,
                        open_[t],
                        atr[t - 1],
                        cash,
                        pos,
                        entry_fill,
                        entry_comm,
                        sl,
                        tp,
                        spec,
                    )
                    pending = np.nan
                    entry_bar = t
                    trades += c_
                    wins += w_
                    rejected += r_
                if any_stops and pos != 0.0 and not (on_close and entry_bar >= t):
                    q = _stop_quote_nb(pos, open_[t], high[t], low[t], sl, tp)
                    if q == q:
                        cash, pos, entry_fill, entry_comm, sl, tp, c_, w_, r_ = _execute_one_nb(
                            0.0, q, np.nan, cash, pos, entry_fill, entry_comm, sl, tp, spec
                        )
                        trades += c_
                        wins += w_
                if t >= first and t < n - 1:
                    if use_lines:
                        v = np.nan
                        if fast[t - 1] < slow[t - 1] and fast[t] > slow[t]:
                            v = 1.0
                        elif slow[t - 1] < fast[t - 1] and slow[t] > fast[t]:
                            v = -1.0
                    else:
                        v = target[t]
                    if v == v:
                        d = 1.0 if v > 0.0 else (-1.0 if v < 0.0 and allow_short else 0.0)
                        if d != (1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)):
                            pending = d
                            if on_close:
                                cash, pos, entry_fill, entry_comm, sl, tp, c_, w_, r_ = (
                                    _execute_one_nb(
                                        pending,
                                        close[t],
                                        atr[t],
                                        cash,
                                        pos,
                                        entry_fill,
                                        entry_comm,
                                        sl,
                                        tp,
                                        spec,
                                    )
                                )
                                pending = np.nan
                                entry_bar = t
                                trades += c_
                                wins += w_
                                rejected += r_
                if t == n - 1 and pos != 0.0:
                    q = open_[t] if spec.final_at_open else close[t]
                    cash, pos, entry_fill, entry_comm, sl, tp, c_, w_, r_ = _execute_one_nb(
                        0.0, q, np.nan, cash, pos, entry_fill, entry_comm, sl, tp, spec
                    )
                    trades += c_
                    wins += w_
                eq = cash + pos * close[t]
                if eq <= 0.0:
                    if pos != 0.0:
                        cash, pos, entry_fill, entry_comm, sl, tp, c_, w_, r_ = _execute_one_nb(
                            0.0, close[t], np.nan, cash, pos, entry_fill, entry_comm, sl, tp, spec
                        )
                        trades += c_
                        wins += w_
                    cash = max(cash, 0.0)
                    eq = cash
                    alive = False
                if pos != 0.0:
                    exposed += 1
            r, down, peak, floor, mdd, r1, r2 = _account_nb(
                eq, prev, rf, down, peak, floor, mdd, r1, r2, False
            )
            prev = eq
            if keep:
                returns[t] = r
            t += 1
        for j in range(column, n_blocks + 1):  # the last column (and any never reached)
            blocks[0, j] = r1
            blocks[1, j] = r2
        for j in range(n_blocks, 0, -1):  # each column's own sums
            blocks[0, j] -= blocks[0, j - 1]
            blocks[1, j] -= blocks[1, j - 1]
        ppy = spec.periods_per_year
        mean = r1 / n - rf  # mean excess return; the variance is the raw returns'
        m2 = r2 - r1 * (r1 / n)
        if m2 < 0.0:
            m2 = 0.0
        std = math.sqrt(m2 / (n - 1)) if n > 1 else np.nan
        total = eq / spec.initial_capital - 1.0
        stats[STAT_TOTAL_RETURN] = total
        stats[STAT_ANNUAL_RETURN] = (1.0 + total) ** (ppy / n) - 1.0 if total > -1.0 else -1.0
        stats[STAT_VOLATILITY] = std * math.sqrt(ppy)
        stats[STAT_SHARPE] = mean / std * math.sqrt(ppy) if std > 0.0 else np.nan
        dr = math.sqrt(down / n)
        stats[STAT_SORTINO] = mean * ppy / (dr * math.sqrt(ppy)) if dr > 0.0 else np.nan
        stats[STAT_MAX_DRAWDOWN] = mdd
        stats[STAT_TRADES] = trades
        stats[STAT_WIN_RATE] = wins / trades if trades > 0 else np.nan
        stats[STAT_EXPOSURE] = exposed / n
        stats[STAT_REJECTED] = rejected
        stats[STAT_FINAL_CAPITAL] = eq

    return simulate


simulate_lines_nb = _simulator(True, False)
simulate_lines_stops_nb = _simulator(True, True)
simulate_targets_nb = _simulator(False, False)
simulate_targets_stops_nb = _simulator(False, True)


@njit(cache=True, nogil=True, error_model="numpy")
def simulate_one_nb(
    open_, high, low, close, target, fast, slow, use_lines, atr, spec, rf, stats, returns, blocks
):
    """Simulate one symbol and write its statistics row (and returns, if ``returns`` is sized).

    The targets are ``target`` (n) or, when ``use_lines``, the crossovers of ``fast`` over
    ``slow`` (``signals.crossover_target_into_nb``'s rule), computed on the fly.

    ``blocks`` (2, S + 1) receives the sums of the raw bar returns (row 0) and of their
    squares (row 1): column 0 over the leading ``n - S * (n // S)`` bars, columns 1..S over
    S consecutive blocks of ``n // S`` bars (the CSCV blocks of the PBO); the columns add up
    to the whole series (the per-bar Sharpe ratios of the DSR). S may be 0. They are
    differences of the running sums, so the statistics do not depend on S.

    Bars on which nothing can happen (no order pending, no stop touched, no new wish, equity
    positive, not the last bar) run in an inner loop without calls, which keeps the state in
    registers; any other bar takes the full path. Both apply the same arithmetic in the same
    order, so the statistics do not depend on which path a bar took.
    """
    stops = spec.stop_loss == spec.stop_loss or spec.take_profit == spec.take_profit
    args = (open_, high, low, close, target, fast, slow, atr, spec, rf, stats, returns, blocks)
    if use_lines:
        if stops:
            simulate_lines_stops_nb(*args)
        else:
            simulate_lines_nb(*args)
    elif stops:
        simulate_targets_stops_nb(*args)
    else:
        simulate_targets_nb(*args)
