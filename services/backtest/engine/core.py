"""The event loop: one numba kernel that simulates a portfolio of aligned bar series.

Conventions (the contract the tests hold the kernel to):

* Bars are ``(n_bars, n_symbols)`` float64 matrices (open, high, low, close), aligned and
  finite. One cash account is shared by every symbol.
* ``target[t, j]`` is the strategy's wish for symbol ``j`` decided at the close of bar ``t``
  from data up to and including ``t``: ``> 0`` long, ``< 0`` short, ``0`` flat, NaN "no
  change". Only its sign matters; the size comes from the sizing rule. A wish equal to the
  current side does nothing (no rebalancing); a different side closes the position, and a
  non-zero one then opens the new side.
* ``fill_on_close`` false: the order fills at the open of ``t + 1``; true: at the close of
  ``t``. Decisions at bars before ``warmup`` and at the last bar are ignored.
* Within one fill moment every close is executed before any opening order, so an opening
  order is sized on the cash its closes released (backtesting.py's ``position.close();
  buy()``).
* Slippage is adverse: buys fill at ``price * (1 + slippage)``, sells at ``price * (1 -
  slippage)``. Commission is ``max(min_commission, shares * (commission + fill *
  commission_rate))``.
* An opening order can spend at most the free margin ``equity - sum(|position value|)``
  (for a long-only book: the cash, which therefore never goes negative; covering a short
  whose price rose can borrow against the rest of a portfolio while equity stays positive).
  An order larger than that is resized to what it can afford (``n_resized``); one that
  can afford nothing (or only dust, under ``MIN_SHARES``), or that would exceed
  ``max_positions``, is rejected (``n_rejected``).
* Stop-loss and take-profit are fractions of the entry fill. They are checked against every
  bar after the entry (in next-open mode also against the entry bar itself, which opened at
  the fill): a bar that opens through the level fills at the open, otherwise at the level;
  when both levels lie inside one bar the stop wins.
* Equity that reaches zero liquidates the book at that close and stops trading.
* What is still open after the last bar closes at the last close (or, for backtesting.py's
  ``finalize_trades`` convention, ``final_at_open``, at the last bar's open).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

# backtesting.py's default order size (1 - machine epsilon): keeps whole-share sizing equal.
ALL_IN_FRACTION = 1.0 - 2.220446049250313e-16
# Smallest order, in shares (fractional sizing of an almost empty budget gives dust).
MIN_SHARES = 1e-6

SIZE_ALL_IN = 0
SIZE_PERCENT_EQUITY = 1
SIZE_FIXED_CASH = 2
SIZE_FIXED_SHARES = 3
SIZE_VOLATILITY_TARGET = 4

REASON_SIGNAL = 0
REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2
REASON_END = 3
REASON_LIQUIDATION = 4

# Columns of the fill log.
LOG_BAR = 0
LOG_SYMBOL = 1
LOG_DIRECTION = 2  # +1 buy, -1 sell
LOG_SHARES = 3
LOG_PRICE = 4  # fill price, slippage included
LOG_COMMISSION = 5
LOG_SLIPPAGE = 6  # |fill - quoted| * shares
LOG_TOTAL_COST = 7  # shares * price + commission
LOG_PNL = 8  # realised on closing fills (both commissions included), NaN on opening fills
LOG_VALUE = 9  # portfolio value right after the fill
LOG_REASON = 10
LOG_TRADE_RETURN = 11  # pnl / equity when the trade opened, NaN on opening fills
LOG_COLUMNS = 12

# Counters returned beside the arrays.
CNT_FILLS = 0
CNT_REJECTED = 1
CNT_RESIZED = 2
CNT_TRADES = 3  # closed round trips
CNT_WINS = 4
CNT_GROSS_PROFIT = 5
CNT_GROSS_LOSS = 6
CNT_EXPOSED = 7  # bars that end with an open position
COUNTERS = 8


class SimSpec(NamedTuple):
    """Scalar settings of one simulation, typed for the kernel (see ``make_spec``)."""

    initial_capital: float
    commission: float
    commission_rate: float
    min_commission: float
    slippage: float
    size_method: int
    size_value: float
    fractional: bool
    allow_short: bool
    max_positions: int
    stop_loss: float  # NaN: none
    take_profit: float  # NaN: none
    fill_on_close: bool
    warmup: int
    periods_per_year: float
    final_at_open: bool


@njit(cache=True, nogil=True, inline="always")
def commission_nb(shares, fill, spec):
    """Return the commission of a fill of ``shares`` at ``fill`` (0 for no shares)."""
    if shares <= 0.0:
        return 0.0
    c = shares * (spec.commission + fill * spec.commission_rate)
    return c if c > spec.min_commission else spec.min_commission


@njit(cache=True, nogil=True, inline="always")
def _round_shares_nb(x, fractional):
    """Return ``x`` floored to whole shares unless fractional, never negative."""
    if not x > 0.0:
        return 0.0
    return x if fractional else math.floor(x)


@njit(cache=True, nogil=True)
def order_shares_nb(spec, fill, free, equity, atr, slots):
    """Return (shares, resized) for an opening order at ``fill`` with ``free`` margin.

    The cost ``shares * fill + max(min_commission, shares * (commission + fill * rate))``
    stays within the budget: the shares are at most ``budget / (fill * (1 + rate) +
    commission)`` and ``(budget - min_commission) / fill``.
    """
    unit = fill * (1.0 + spec.commission_rate) + spec.commission
    budget = free * ALL_IN_FRACTION
    if spec.size_method == SIZE_ALL_IN and slots > 1:
        budget = budget / slots
    # backtesting.py's whole-share rule: (margin * size) // (price + commission per share)
    most = budget / unit if spec.fractional else budget // unit
    if spec.min_commission > 0.0:
        cap = _round_shares_nb((budget - spec.min_commission) / fill, spec.fractional)
        if cap < most:
            most = cap
    if not most > 0.0:
        most = 0.0
    if spec.size_method == SIZE_ALL_IN:
        want = most
    else:
        if spec.size_method == SIZE_PERCENT_EQUITY:
            want = spec.size_value * equity / fill
        elif spec.size_method == SIZE_FIXED_CASH:
            want = spec.size_value / fill
        elif spec.size_method == SIZE_FIXED_SHARES:
            want = spec.size_value
        else:  # volatility target: shares * ATR * sqrt(periods/year) = annual_vol * equity
            risk = atr * math.sqrt(spec.periods_per_year)
            want = spec.size_value * equity / risk if risk > 0.0 else 0.0
        want = _round_shares_nb(want, spec.fractional)
    shares = want if want <= most else most
    # Guard the last ulp: the cost must never exceed the free margin.
    while shares > 0.0 and shares * fill + commission_nb(shares, fill, spec) > free:
        shares = shares - 1.0 if not spec.fractional else shares * (1.0 - 1e-12)
    if shares < MIN_SHARES:
        shares = 0.0  # dust is no order
    resized = shares < want and shares > 0.0
    return shares, resized


@njit(cache=True, nogil=True, inline="always")
def _book_nb(pos, mark):
    """Return (net value, gross value) of the positions marked at ``mark``."""
    net = 0.0
    gross = 0.0
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            v = pos[j] * mark[j]
            net += v
            gross += abs(v)
    return net, gross


@njit(cache=True, nogil=True, inline="always")
def _log_nb(log, k, t, j, side, shares, fill, quote, comm, pnl, value, reason, trade_return):
    """Write fill ``k`` into the (preallocated) fill log."""
    log[k, LOG_BAR] = t
    log[k, LOG_SYMBOL] = j
    log[k, LOG_DIRECTION] = side
    log[k, LOG_SHARES] = shares
    log[k, LOG_PRICE] = fill
    log[k, LOG_COMMISSION] = comm
    log[k, LOG_SLIPPAGE] = abs(fill - quote) * shares
    log[k, LOG_TOTAL_COST] = shares * fill + comm
    log[k, LOG_PNL] = pnl
    log[k, LOG_VALUE] = value
    log[k, LOG_REASON] = reason
    log[k, LOG_TRADE_RETURN] = trade_return


@njit(cache=True, nogil=True)
def _close_nb(j, t, quote, reason, spec, state, pos, mark, log, cnt, record):
    """Close symbol ``j``'s position at ``quote`` (before slippage)."""
    s = pos[j]
    side = -1.0 if s > 0.0 else 1.0  # the closing fill's direction
    fill = quote * (1.0 + side * spec.slippage)
    shares = abs(s)
    comm = commission_nb(shares, fill, spec)
    if side < 0.0:
        state[0] += shares * fill - comm
    else:
        state[0] -= shares * fill + comm
    pnl = s * (fill - state[1 + j]) - state[1 + pos.shape[0] + j] - comm
    pos[j] = 0.0
    mark[j] = quote
    cnt[CNT_FILLS] += 1.0
    cnt[CNT_TRADES] += 1.0
    if pnl > 0.0:
        cnt[CNT_WINS] += 1.0
        cnt[CNT_GROSS_PROFIT] += pnl
    else:
        cnt[CNT_GROSS_LOSS] -= pnl
    if record:
        net, _ = _book_nb(pos, mark)
        _log_nb(
            log,
            int(cnt[CNT_FILLS]) - 1,
            t,
            j,
            side,
            shares,
            fill,
            quote,
            comm,
            pnl,
            state[0] + net,
            reason,
            pnl / state[1 + 2 * pos.shape[0] + j],
        )


@njit(cache=True, nogil=True)
def _open_nb(j, t, side, quote, atr, slots, spec, state, pos, mark, stops, log, cnt, record):
    """Open a ``side`` (+1/-1) position in symbol ``j`` at ``quote`` (before slippage)."""
    m = pos.shape[0]
    mark[j] = quote
    fill = quote * (1.0 + side * spec.slippage)
    net, gross = _book_nb(pos, mark)
    equity = state[0] + net
    # free margin = equity - gross = cash - 2 * shorts <= cash; min() drops rounding ulps
    free = min(equity - gross, state[0])
    if free < 0.0:
        free = 0.0
    shares, resized = order_shares_nb(spec, fill, free, equity, atr, slots)
    if not shares > 0.0:
        cnt[CNT_REJECTED] += 1.0
        return
    if resized:
        cnt[CNT_RESIZED] += 1.0
    comm = commission_nb(shares, fill, spec)
    if side > 0.0:
        state[0] -= shares * fill + comm
    else:
        state[0] += shares * fill - comm
    pos[j] = side * shares
    state[1 + j] = fill
    state[1 + m + j] = comm
    state[1 + 2 * m + j] = equity
    stops[0, j] = fill * (1.0 - side * spec.stop_loss)  # NaN when no stop
    stops[1, j] = fill * (1.0 + side * spec.take_profit)
    stops[2, j] = t
    cnt[CNT_FILLS] += 1.0
    if record:
        net, _ = _book_nb(pos, mark)
        _log_nb(
            log,
            int(cnt[CNT_FILLS]) - 1,
            t,
            j,
            side,
            shares,
            fill,
            quote,
            comm,
            np.nan,
            state[0] + net,
            REASON_SIGNAL,
            np.nan,
        )


@njit(cache=True, nogil=True)
def _execute_nb(t, quotes, atr, arow, pending, spec, state, pos, mark, stops, log, cnt, record):
    """Execute the pending wishes at ``quotes[t]``: every close first, then the openings.

    Opening orders see the ATR of bar ``arow`` (the decision bar).
    """
    m = pos.shape[0]
    for j in range(m):
        d = pending[j]
        if d != d or pos[j] == 0.0:
            continue
        if (pos[j] > 0.0 and d <= 0.0) or (pos[j] < 0.0 and d >= 0.0):
            _close_nb(j, t, quotes[t, j], REASON_SIGNAL, spec, state, pos, mark, log, cnt, record)
    held = 0
    for j in range(m):
        if pos[j] != 0.0:
            held += 1
    for j in range(m):
        d = pending[j]
        pending[j] = np.nan
        if d != d or d == 0.0 or pos[j] != 0.0:
            continue
        if held >= spec.max_positions:
            cnt[CNT_REJECTED] += 1.0
            continue
        _open_nb(
            j,
            t,
            d,
            quotes[t, j],
            atr[arow, j],
            min(spec.max_positions, m) - held,  # free slots share all_in cash
            spec,
            state,
            pos,
            mark,
            stops,
            log,
            cnt,
            record,
        )
        if pos[j] != 0.0:
            held += 1


@njit(cache=True, nogil=True)
def _check_stops_nb(t, open_, high, low, spec, state, pos, mark, stops, log, cnt, record):
    """Exit positions whose stop-loss or take-profit lies inside bar ``t``."""
    for j in range(pos.shape[0]):
        s = pos[j]
        if s == 0.0 or (spec.fill_on_close and stops[2, j] >= t):
            continue
        o = open_[t, j]
        sl = stops[0, j]
        tp = stops[1, j]
        quote = np.nan
        reason = REASON_STOP_LOSS
        if s > 0.0:
            if low[t, j] <= sl:  # False for NaN (no stop)
                quote = o if o < sl else sl
            elif high[t, j] >= tp:
                quote = o if o > tp else tp
                reason = REASON_TAKE_PROFIT
        else:
            if high[t, j] >= sl:
                quote = o if o > sl else sl
            elif low[t, j] <= tp:
                quote = o if o < tp else tp
                reason = REASON_TAKE_PROFIT
        if quote == quote:
            _close_nb(j, t, quote, reason, spec, state, pos, mark, log, cnt, record)


@njit(cache=True, nogil=True)
def simulate_nb(
    open_, high, low, close, target, atr, spec, record, equity_out, cash_out, positions_out
):
    """Simulate the portfolio bar by bar; return (fill log, counters).

    ``equity_out`` (n) is always written; ``cash_out`` (n) and ``positions_out`` (n, m, in
    signed shares) and the fill log only when ``record``. The counters are indexed by the
    ``CNT_*`` constants.
    """
    n, m = close.shape
    # state: cash, then per symbol entry fill, entry commission, equity at entry.
    state = np.zeros(1 + 3 * m)
    state[0] = spec.initial_capital
    pos = np.zeros(m)
    mark = np.empty(m)
    pending = np.full(m, np.nan)
    stops = np.full((3, m), np.nan)  # stop level, take-profit level, entry bar
    cnt = np.zeros(COUNTERS)
    # Fills per bar and symbol: at most a close and an opening order plus a stop exit.
    log = np.empty((3 * n * m + 2 * m if record else 0, LOG_COLUMNS))
    any_stops = spec.stop_loss == spec.stop_loss or spec.take_profit == spec.take_profit
    alive = True
    has_pending = False
    held = 0
    # The per-bar path calls no helper (a call costs more than a bar); helpers run on events.
    for t in range(n):
        if alive:
            if has_pending and not spec.fill_on_close:
                for j in range(m):
                    mark[j] = open_[t, j]
                _execute_nb(
                    t,
                    open_,
                    atr,
                    t - 1,
                    pending,
                    spec,
                    state,
                    pos,
                    mark,
                    stops,
                    log,
                    cnt,
                    record,
                )
                has_pending = False
                held = 0
                for j in range(m):
                    if pos[j] != 0.0:
                        held += 1
            if any_stops and held > 0:
                for j in range(m):
                    mark[j] = open_[t, j]
                _check_stops_nb(
                    t, open_, high, low, spec, state, pos, mark, stops, log, cnt, record
                )
            if t >= spec.warmup and t < n - 1:
                for j in range(m):
                    v = target[t, j]
                    if v != v:
                        continue
                    d = 1.0 if v > 0.0 else (-1.0 if v < 0.0 and spec.allow_short else 0.0)
                    s = pos[j]
                    if d != (1.0 if s > 0.0 else (-1.0 if s < 0.0 else 0.0)):
                        pending[j] = d  # a wish equal to the current side changes nothing
                        has_pending = True
                if has_pending and spec.fill_on_close:
                    for j in range(m):
                        mark[j] = close[t, j]
                    _execute_nb(
                        t,
                        close,
                        atr,
                        t,
                        pending,
                        spec,
                        state,
                        pos,
                        mark,
                        stops,
                        log,
                        cnt,
                        record,
                    )
                    has_pending = False
            if t == n - 1:
                for j in range(m):
                    mark[j] = close[t, j]
                for j in range(m):
                    if pos[j] != 0.0:
                        quote = open_[t, j] if spec.final_at_open else close[t, j]
                        _close_nb(j, t, quote, REASON_END, spec, state, pos, mark, log, cnt, record)
            eq = state[0]
            held = 0
            for j in range(m):
                s = pos[j]
                if s != 0.0:
                    eq += s * close[t, j]
                    held += 1
            if eq <= 0.0:
                for j in range(m):
                    mark[j] = close[t, j]
                for j in range(m):
                    if pos[j] != 0.0:
                        _close_nb(
                            j,
                            t,
                            close[t, j],
                            REASON_LIQUIDATION,
                            spec,
                            state,
                            pos,
                            mark,
                            log,
                            cnt,
                            record,
                        )
                state[0] = max(state[0], 0.0)
                eq = state[0]
                held = 0
                alive = False
        else:
            eq = state[0]
        equity_out[t] = eq
        if held > 0:
            cnt[CNT_EXPOSED] += 1.0
        if record:
            cash_out[t] = state[0]
            for j in range(m):
                positions_out[t, j] = pos[j]
    return log[: int(cnt[CNT_FILLS])] if record else log, cnt
