"""Order sizing and commission kernels: the backtest engine's rules, shared with the paper broker.

The backtest's event loop (`services/backtest/engine/core.py`) and the portfolio's session
planner (`services/portfolio/execution.py`) size and charge every opening order with these
kernels, so a paper deployment replays the backtest's fills. Scalars in, scalars out.

* Commission is `max(min_commission, shares * (commission + fill * commission_rate))`.
* An opening order spends at most the free margin; whole shares unless fractional; an order
  larger than that is resized to what it can afford; dust under `MIN_SHARES` is no order.
"""

from __future__ import annotations

import math

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
# `position_size.method` -> the kernels' code.
SIZE_METHODS: dict[str, int] = {
    "all_in": SIZE_ALL_IN,
    "percent_equity": SIZE_PERCENT_EQUITY,
    "fixed_cash": SIZE_FIXED_CASH,
    "fixed_shares": SIZE_FIXED_SHARES,
    "volatility_target": SIZE_VOLATILITY_TARGET,
}


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def fee_nb(
    shares: float, fill: float, commission: float, commission_rate: float, min_commission: float
) -> float:
    """Return the commission of a fill of `shares` at `fill` (0 for no shares)."""
    if shares <= 0.0:
        return 0.0
    c = shares * (commission + fill * commission_rate)
    return c if c > min_commission else min_commission


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def round_shares_nb(x: float, fractional: bool) -> float:
    """Return `x` floored to whole shares unless fractional, never negative."""
    if not x > 0.0:
        return 0.0
    return x if fractional else float(math.floor(x))


@njit(cache=True, nogil=True, error_model="numpy")
def size_order_nb(
    size_method: int,
    size_value: float,
    fractional: bool,
    commission: float,
    commission_rate: float,
    min_commission: float,
    periods_per_year: float,
    fill: float,
    free: float,
    equity: float,
    atr: float,
    slots: int,
) -> tuple[float, float]:
    """Return (shares, wanted) for an opening order at `fill` with `free` margin.

    The cost `shares * fill + max(min_commission, shares * (commission + fill * rate))`
    stays within the budget: the shares are at most `budget / (fill * (1 + rate) +
    commission)` and `(budget - min_commission) / fill`. `atr` is read by volatility
    targeting only.
    """
    unit = fill * (1.0 + commission_rate) + commission
    budget = free * ALL_IN_FRACTION
    if size_method == SIZE_ALL_IN and slots > 1:
        budget = budget / slots
    # backtesting.py's whole-share rule: (margin * size) // (price + commission per share)
    most = budget / unit if fractional else budget // unit
    if min_commission > 0.0:
        cap = round_shares_nb((budget - min_commission) / fill, fractional)
        if cap < most:
            most = cap
    if not most > 0.0:
        most = 0.0
    if size_method == SIZE_ALL_IN:
        want = most
    else:
        if size_method == SIZE_PERCENT_EQUITY:
            want = size_value * equity / fill
        elif size_method == SIZE_FIXED_CASH:
            want = size_value / fill
        elif size_method == SIZE_FIXED_SHARES:
            want = size_value
        else:  # volatility target: shares * ATR * sqrt(periods/year) = annual_vol * equity
            risk = atr * math.sqrt(periods_per_year)
            want = size_value * equity / risk if risk > 0.0 else 0.0
        want = round_shares_nb(want, fractional)
    shares = want if want <= most else most
    # Guard the last ulp: the cost must never exceed the free margin.
    while (
        shares > 0.0
        and shares * fill + fee_nb(shares, fill, commission, commission_rate, min_commission) > free
    ):
        shares = shares - 1.0 if not fractional else shares * (1.0 - 1e-12)
    if shares < MIN_SHARES:
        shares = 0.0  # dust is no order
    return shares, want
