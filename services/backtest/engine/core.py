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

import numpy as np
from numba import njit

from shared.quant.sizing import fee_nb, size_order_nb

REASON_SIGNAL = 0
REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2
REASON_END = 3
REASON_LIQUIDATION = 4
REASON_MARGIN_CALL = 5  # a long sold to pay for covering a short (cash never goes negative)

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


# Scalar settings of one simulation. A numpy record rather than a NamedTuple: numba types a
# record argument in ~3 us, a 16-field NamedTuple in ~10 us, on every call. Build one with
# ``runner.make_spec``; fields read as attributes in Python and in the kernels alike.
SPEC_DTYPE = np.dtype(
    [
        ("initial_capital", np.float64),
        ("commission", np.float64),
        ("commission_rate", np.float64),
        ("min_commission", np.float64),
        ("slippage", np.float64),
        ("size_method", np.int64),
        ("size_value", np.float64),
        ("fractional", np.bool_),
        ("allow_short", np.bool_),
        ("max_positions", np.int64),
        ("stop_loss", np.float64),  # NaN: none
        ("take_profit", np.float64),  # NaN: none
        ("fill_on_close", np.bool_),
        ("warmup", np.int64),
        ("periods_per_year", np.float64),
        ("final_at_open", np.bool_),
    ],
    align=True,
)


class SimSpec(np.record):  # type: ignore[misc]  # numpy stubs mark it final
    """One simulation's settings: a ``SPEC_DTYPE`` record with NamedTuple-style helpers."""

    def _asdict(self) -> dict[str, object]:
        """Return the fields as a dict of Python scalars."""
        return {name: self[name].item() for name in SPEC_DTYPE.names or ()}

    def _replace(self, **changes: object) -> SimSpec:
        """Return a copy with some fields changed (as ``NamedTuple._replace``)."""
        return spec_from_fields({**self._asdict(), **changes})


_SPEC_TYPE = np.dtype((SimSpec, SPEC_DTYPE))


def spec_from_fields(fields: dict[str, object]) -> SimSpec:
    """Return a ``SimSpec`` from every field's value (unchecked: see ``runner.make_spec``)."""
    row = tuple(fields[name] for name in SPEC_DTYPE.names or ())
    spec: SimSpec = np.array([row], dtype=_SPEC_TYPE)[0]
    return spec


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def commission_nb(shares, fill, spec):
    """Return the commission of a fill of ``shares`` at ``fill`` (0 for no shares)."""
    return fee_nb(shares, fill, spec.commission, spec.commission_rate, spec.min_commission)


@njit(cache=True, nogil=True, error_model="numpy")
def order_shares_nb(spec, fill, free, equity, atr, slots):
    """Return (shares, resized) for an opening order at ``fill`` with ``free`` margin
    (``shared.quant.sizing.size_order_nb``: the rule the paper broker sizes by too)."""
    shares, want = size_order_nb(
        spec.size_method,
        spec.size_value,
        spec.fractional,
        spec.commission,
        spec.commission_rate,
        spec.min_commission,
        spec.periods_per_year,
        fill,
        free,
        equity,
        atr,
        slots,
    )
    resized = shares < want and shares > 0.0
    return shares, resized


# Rows of the per-symbol book (one column per symbol), one array so that the event helpers
# take few arguments (each array argument costs a reference-count round trip).
B_POS = 0  # signed shares
B_MARK = 1  # latest quote used to value the position
B_ENTRY = 2  # entry fill price
B_ENTRY_COMM = 3  # entry commission
B_ENTRY_EQUITY = 4  # equity when the position opened
B_STOP = 5  # stop-loss level (NaN: none)
B_TAKE = 6  # take-profit level (NaN: none)
B_ENTRY_BAR = 7
B_PENDING = 8  # wish to execute at the next fill moment (NaN: none)
BOOK_ROWS = 9
ACCT_CASH = COUNTERS  # the account array is the counters followed by the cash


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _book_value_nb(book):
    """Return (net value, gross value) of the positions at their marks."""
    net = 0.0
    gross = 0.0
    for j in range(book.shape[1]):
        s = book[B_POS, j]
        if s != 0.0:
            v = s * book[B_MARK, j]
            net += v
            gross += abs(v)
    return net, gross


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
def _close_nb(j, t, quote, reason, spec, book, acct, log, record):
    """Close symbol ``j``'s position at ``quote`` (before slippage); cash never goes negative.

    Covering a short costs cash. When the short has risen so far that the cash left (after
    the longs it paid for) cannot pay the cover, longs are sold first at their current marks,
    as a broker's margin call would (reason ``margin_call``), until it can. Only an account
    that is insolvent even then goes below zero, and the liquidation that follows writes the
    debt off.
    """
    s = book[B_POS, j]
    if s < 0.0:
        fill = quote * (1.0 + spec.slippage)
        need = -s * fill + commission_nb(-s, fill, spec)
        if need > acct[ACCT_CASH]:
            for k in range(book.shape[1]):
                if acct[ACCT_CASH] >= need:
                    break
                if book[B_POS, k] > 0.0:
                    _close_fill_nb(
                        k, t, book[B_MARK, k], REASON_MARGIN_CALL, spec, book, acct, log, record
                    )
    _close_fill_nb(j, t, quote, reason, spec, book, acct, log, record)


@njit(cache=True, nogil=True, error_model="numpy")
def _close_fill_nb(j, t, quote, reason, spec, book, acct, log, record):
    """Fill the close of symbol ``j``'s whole position at ``quote`` (before slippage)."""
    s = book[B_POS, j]
    side = -1.0 if s > 0.0 else 1.0  # the closing fill's direction
    fill = quote * (1.0 + side * spec.slippage)
    shares = abs(s)
    comm = commission_nb(shares, fill, spec)
    if side < 0.0:
        acct[ACCT_CASH] += shares * fill - comm
    else:
        acct[ACCT_CASH] -= shares * fill + comm
    pnl = s * (fill - book[B_ENTRY, j]) - book[B_ENTRY_COMM, j] - comm
    book[B_POS, j] = 0.0
    book[B_MARK, j] = quote
    acct[CNT_FILLS] += 1.0
    acct[CNT_TRADES] += 1.0
    if pnl > 0.0:
        acct[CNT_WINS] += 1.0
        acct[CNT_GROSS_PROFIT] += pnl
    else:
        acct[CNT_GROSS_LOSS] -= pnl
    if record:
        net, _ = _book_value_nb(book)
        _log_nb(
            log,
            int(acct[CNT_FILLS]) - 1,
            t,
            j,
            side,
            shares,
            fill,
            quote,
            comm,
            pnl,
            acct[ACCT_CASH] + net,
            reason,
            pnl / book[B_ENTRY_EQUITY, j],
        )


@njit(cache=True, nogil=True, error_model="numpy")
def _open_nb(j, t, side, quote, atr, slots, spec, book, acct, log, record):
    """Open a ``side`` (+1/-1) position in symbol ``j`` at ``quote`` (before slippage)."""
    book[B_MARK, j] = quote
    fill = quote * (1.0 + side * spec.slippage)
    net, gross = _book_value_nb(book)
    cash = acct[ACCT_CASH]
    equity = cash + net
    # free margin = equity - gross = cash - 2 * shorts <= cash; min() drops rounding ulps
    free = min(equity - gross, cash)
    if free < 0.0:
        free = 0.0
    shares, resized = order_shares_nb(spec, fill, free, equity, atr, slots)
    if not shares > 0.0:
        acct[CNT_REJECTED] += 1.0
        return
    if resized:
        acct[CNT_RESIZED] += 1.0
    comm = commission_nb(shares, fill, spec)
    if side > 0.0:
        acct[ACCT_CASH] -= shares * fill + comm
    else:
        acct[ACCT_CASH] += shares * fill - comm
    book[B_POS, j] = side * shares
    book[B_ENTRY, j] = fill
    book[B_ENTRY_COMM, j] = comm
    book[B_ENTRY_EQUITY, j] = equity
    book[B_STOP, j] = fill * (1.0 - side * spec.stop_loss)  # NaN when no stop
    book[B_TAKE, j] = fill * (1.0 + side * spec.take_profit)
    book[B_ENTRY_BAR, j] = t
    acct[CNT_FILLS] += 1.0
    if record:
        net, _ = _book_value_nb(book)
        _log_nb(
            log,
            int(acct[CNT_FILLS]) - 1,
            t,
            j,
            side,
            shares,
            fill,
            quote,
            comm,
            np.nan,
            acct[ACCT_CASH] + net,
            REASON_SIGNAL,
            np.nan,
        )


@njit(cache=True, nogil=True, error_model="numpy")
def _execute_nb(t, quotes, atr, arow, spec, book, acct, log, record):
    """Execute the pending wishes at ``quotes[t]``: every close first, then the openings.

    Marks every symbol at ``quotes[t]``; opening orders see the ATR of bar ``arow`` (the
    decision bar). Returns the number of open positions afterwards.
    """
    m = book.shape[1]
    for j in range(m):
        book[B_MARK, j] = quotes[t, j]
    for j in range(m):
        d = book[B_PENDING, j]
        s = book[B_POS, j]
        if d != d or s == 0.0:
            continue
        if (s > 0.0 and d <= 0.0) or (s < 0.0 and d >= 0.0):
            _close_nb(j, t, quotes[t, j], REASON_SIGNAL, spec, book, acct, log, record)
    held = 0
    for j in range(m):
        if book[B_POS, j] != 0.0:
            held += 1
    for j in range(m):
        d = book[B_PENDING, j]
        book[B_PENDING, j] = np.nan
        if d != d or d == 0.0 or book[B_POS, j] != 0.0:
            continue
        if held >= spec.max_positions:
            acct[CNT_REJECTED] += 1.0
            continue
        # free slots share all_in cash
        slots = min(spec.max_positions, m) - held
        _open_nb(j, t, d, quotes[t, j], atr[arow, j], slots, spec, book, acct, log, record)
        if book[B_POS, j] != 0.0:
            held += 1
    return held


@njit(cache=True, nogil=True, error_model="numpy")
def _check_stops_nb(t, open_, high, low, spec, book, acct, log, record):
    """Exit positions whose stop-loss or take-profit lies inside bar ``t``."""
    for j in range(book.shape[1]):
        book[B_MARK, j] = open_[t, j]
    for j in range(book.shape[1]):
        s = book[B_POS, j]
        if s == 0.0 or (spec.fill_on_close and book[B_ENTRY_BAR, j] >= t):
            continue
        o = open_[t, j]
        sl = book[B_STOP, j]
        tp = book[B_TAKE, j]
        quote = np.nan
        reason = REASON_STOP_LOSS
        if s > 0.0:
            if low[t, j] <= sl:  # False for NaN (no stop)
                quote = o if o < sl else sl
            elif high[t, j] >= tp:
                quote = o if o > tp else tp
                reason = REASON_TAKE_PROFIT
        elif high[t, j] >= sl:
            quote = o if o > sl else sl
        elif low[t, j] <= tp:
            quote = o if o < tp else tp
            reason = REASON_TAKE_PROFIT
        if quote == quote:
            _close_nb(j, t, quote, reason, spec, book, acct, log, record)


@njit(cache=True, nogil=True, error_model="numpy")
def _close_all_nb(t, quotes, reason, spec, book, acct, log, record):
    """Close every open position at ``quotes[t]`` (the end of the data, or a liquidation)."""
    for j in range(book.shape[1]):
        book[B_MARK, j] = quotes[t, j]
    for j in range(book.shape[1]):
        if book[B_POS, j] != 0.0:
            _close_nb(j, t, quotes[t, j], reason, spec, book, acct, log, record)


@njit(cache=True, nogil=True, error_model="numpy")
def simulate_nb(
    open_, high, low, close, target, atr, spec, record, equity_out, cash_out, positions_out
):
    """Simulate the portfolio bar by bar; return (fill log, counters).

    ``equity_out`` (n) is always written; ``cash_out`` (n) and ``positions_out`` (n, m, in
    signed shares) and the fill log only when ``record``. The counters are indexed by the
    ``CNT_*`` constants.
    """
    n, m = close.shape
    book = np.zeros((BOOK_ROWS, m))
    book[B_STOP:, :] = np.nan
    acct = np.zeros(COUNTERS + 1)
    acct[ACCT_CASH] = spec.initial_capital
    # Every position opens on a wish and closes once, so at most two fills per wish. Sizing
    # the log by the wishes keeps it small (a worst-case log would be an mmap per call).
    rows = 0
    if record:
        for t in range(n):
            for j in range(m):
                if target[t, j] == target[t, j]:
                    rows += 2
    log = np.empty((rows, LOG_COLUMNS))
    any_stops = spec.stop_loss == spec.stop_loss or spec.take_profit == spec.take_profit
    on_close = spec.fill_on_close
    last = n - 1
    alive = True
    has_pending = False
    held = 0
    exposed = 0
    eq = spec.initial_capital
    # The per-bar path calls no helper (a call costs more than a bar); helpers run on events.
    for t in range(n):
        if alive:
            if has_pending and not on_close:
                held = _execute_nb(t, open_, atr, t - 1, spec, book, acct, log, record)
                has_pending = False
            if any_stops and held > 0:
                _check_stops_nb(t, open_, high, low, spec, book, acct, log, record)
            if t >= spec.warmup and t < last:
                for j in range(m):
                    v = target[t, j]
                    if v != v:
                        continue
                    d = 1.0 if v > 0.0 else (-1.0 if v < 0.0 and spec.allow_short else 0.0)
                    s = book[B_POS, j]
                    if d != (1.0 if s > 0.0 else (-1.0 if s < 0.0 else 0.0)):
                        book[B_PENDING, j] = d  # a wish equal to the current side is nothing
                        has_pending = True
                if has_pending and on_close:
                    _execute_nb(t, close, atr, t, spec, book, acct, log, record)
                    has_pending = False
            if t == last:
                _close_all_nb(
                    t,
                    open_ if spec.final_at_open else close,
                    REASON_END,
                    spec,
                    book,
                    acct,
                    log,
                    record,
                )
            eq = acct[ACCT_CASH]
            held = 0
            for j in range(m):
                s = book[B_POS, j]
                if s != 0.0:
                    eq += s * close[t, j]
                    held += 1
            if eq <= 0.0:
                _close_all_nb(t, close, REASON_LIQUIDATION, spec, book, acct, log, record)
                acct[ACCT_CASH] = max(acct[ACCT_CASH], 0.0)
                eq = acct[ACCT_CASH]
                held = 0
                alive = False
        equity_out[t] = eq
        if held > 0:
            exposed += 1
        if record:
            cash_out[t] = acct[ACCT_CASH]
            for j in range(m):
                positions_out[t, j] = book[B_POS, j]
    acct[CNT_EXPOSED] = exposed
    return log[: int(acct[CNT_FILLS])], acct[:COUNTERS].copy()
