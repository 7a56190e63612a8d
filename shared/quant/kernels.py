"""Numba kernels for technical indicators that reproduce TA-Lib's output.

Every ``*_nb`` kernel takes contiguous float64 arrays (and int/float parameters) and returns
float64 arrays of the same length, with NaN on the warm-up bars, i.e. exactly where ``talib``
puts NaN. The arithmetic follows TA-Lib's conventions (seeding, smoothing order, zero-range
guards) so the values agree with ``talib`` to ~1e-12 on price data. ``*_into_nb`` variants
write into caller-allocated outputs instead: arrays allocated by numpy get transparent huge
pages (numpy madvises them), numba's allocator does not, and at a million bars the extra 4 KiB
page faults on first touch cost as much as the computation itself. All kernels are O(n) in the
number of bars and release the GIL (``nogil=True``), so threads can run them in parallel:

* SMA keeps TA-Lib's running sum (add the new value, divide, subtract the trailing one);
* RSI, EMA, MACD and ATR are single recurrences;
* BBANDS keeps running sums (shifted to avoid cancellation, re-seeded when it matters);
* WILLR and STOCH use the van Herk / Gil-Werman block scan for the rolling high/low, a fixed
  three comparisons per bar and extremum whatever the period or the shape of the data.

Parameters are not checked here (a period below 1 is undefined behaviour): validate them
first, as ``shared.quant.indicators.compute`` does. Inputs are assumed finite from the first
bar on; leading NaNs are stripped by ``compute`` the way the ``talib`` Python wrapper strips
them. A NaN inside the series is not an error, but what it does to later bars is not
guaranteed to match TA-Lib (TA-Lib's running sums carry it forever; BBANDS here recovers once
it leaves the window).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]

if TYPE_CHECKING:
    _F = TypeVar("_F", bound=Callable[..., Any])

    def njit(**options: Any) -> Callable[[_F], _F]:
        """Type numba's decorator as signature-preserving, so callers are type-checked."""
        ...

else:
    from numba import njit

# TA-Lib's TA_EPSILON, used by its scale-aware zero test TA_IS_ZERO_SCALED(v, |a| + |b|).
_TA_EPSILON = 1e-14

# BBANDS: when to recompute the window sums exactly (see bbands_into_nb).
_VAR_CANCEL_RATIO = 1e-2
_VAR_PEAK_RATIO = 1e-3
_VAR_NOISE_RATIO = 1e-12
_RESEED_PERIODS = 32

# Let LLVM contract a*b+c into one fused multiply-add (nothing else: no reassociation, NaN
# semantics kept). The TA-Lib 0.8 C library evaluates its EMA recurrences with FMA, so on an
# FMA-capable host this makes EMA/MACD bit-identical to it, and it takes one rounding and one
# instruction of latency out of every carried recurrence (2x faster MACD). Without FMA the
# results differ from TA-Lib's by an ulp or so.
_CONTRACT = {"contract"}


@njit(cache=True, nogil=True)
def _nan_head_nb(out: Float64Array, count: int) -> None:
    """Fill the first ``count`` slots (clipped to the length) with NaN."""
    m = min(count, out.shape[0])
    for i in range(m):
        out[i] = np.nan


# --------------------------------------------------------------------------------------------
# SMA
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def sma_into_nb(x: Float64Array, period: int, out: Float64Array) -> None:
    """Write TA-Lib's SMA (running sum, lookback ``period - 1``) into ``out``."""
    n = x.shape[0]
    lb = period - 1
    _nan_head_nb(out, lb)
    if n <= lb:
        return
    total = 0.0
    for i in range(lb):
        total += x[i]
    # TA-Lib's order: add the entering value, divide, then drop the trailing one.
    for i in range(lb, n):
        total += x[i]
        out[i] = total / period
        total -= x[i - lb]


@njit(cache=True, nogil=True)
def sma_nb(close: Float64Array, period: int) -> Float64Array:
    """Compute TA-Lib's simple moving average over ``period`` bars."""
    out = np.empty(close.shape[0])
    sma_into_nb(close, period, out)
    return out


# --------------------------------------------------------------------------------------------
# RSI / EMA / MACD
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def rsi_into_nb(close: Float64Array, period: int, out: Float64Array) -> None:
    """Write TA-Lib's RSI (Wilder smoothing, SMA seed, lookback ``period``) into ``out``."""
    n = close.shape[0]
    _nan_head_nb(out, period)
    if n <= period:
        return
    inv_p = 1.0 / period
    pm1 = float(period - 1)
    gain = 0.0
    loss = 0.0
    prev = close[0]
    for i in range(1, period + 1):
        cur = close[i]
        d = cur - prev
        prev = cur
        g = d if d > 0.0 else 0.0
        gain += g
        loss += g - d
    gain *= inv_p
    loss *= inv_p
    total = gain + loss
    # TA-Lib tests the total exactly and answers 0 when nothing moved (no gain, no loss).
    out[period] = 100.0 * (gain / total) if total > 0.0 else 0.0
    for i in range(period + 1, n):
        cur = close[i]
        d = cur - prev
        prev = cur
        g = d if d > 0.0 else 0.0
        gain = (gain * pm1 + g) * inv_p
        loss = (loss * pm1 + (g - d)) * inv_p
        total = gain + loss
        out[i] = 100.0 * (gain / total) if total > 0.0 else 0.0


@njit(cache=True, nogil=True)
def rsi_nb(close: Float64Array, period: int) -> Float64Array:
    """Compute TA-Lib's RSI (Wilder smoothing, SMA seed, lookback ``period``)."""
    out = np.empty(close.shape[0])
    rsi_into_nb(close, period, out)
    return out


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def ema_into_nb(x: Float64Array, period: int, out: Float64Array) -> None:
    """Write TA-Lib's EMA (SMA of the first ``period`` values as seed, k = 2/(period+1))."""
    n = x.shape[0]
    lb = period - 1
    _nan_head_nb(out, lb)
    if n <= lb:
        return
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(period):
        total += x[i]
    prev = total / period
    out[lb] = prev
    for i in range(period, n):
        prev = (x[i] - prev) * k + prev
        out[i] = prev


@njit(cache=True, nogil=True)
def ema_nb(x: Float64Array, period: int) -> Float64Array:
    """Compute TA-Lib's EMA: SMA of the first ``period`` values as seed, k = 2/(period+1)."""
    out = np.empty(x.shape[0])
    ema_into_nb(x, period, out)
    return out


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def macd_into_nb(
    close: Float64Array,
    fast: int,
    slow: int,
    signal: int,
    macd: Float64Array,
    sig: Float64Array,
    hist: Float64Array,
) -> None:
    """Write TA-Lib's MACD line, signal line and histogram into the three output arrays."""
    n = close.shape[0]
    if slow < fast:  # TA-Lib swaps the periods rather than failing
        fast, slow = slow, fast
    lb = (slow - 1) + (signal - 1)
    _nan_head_nb(macd, lb)
    _nan_head_nb(sig, lb)
    _nan_head_nb(hist, lb)
    if n <= lb:
        return
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    # Both EMAs produce their first value on bar slow-1: the slow one is seeded with the SMA
    # of bars [0, slow), the fast one with the SMA of bars [slow-fast, slow) -- not of the
    # first `fast` bars, which is what a standalone EMA(fast) would use.
    total = 0.0
    for i in range(slow):
        total += close[i]
    ema_slow = total / slow
    total = 0.0
    for i in range(slow - fast, slow):
        total += close[i]
    ema_fast = total / fast
    m = ema_fast - ema_slow
    # The signal line is seeded with the SMA of the first `signal` MACD values, which sit on
    # bars [slow-1, lb]; only bars >= lb are returned.
    sig_total = m
    for i in range(slow, lb + 1):
        c = close[i]
        ema_slow = (c - ema_slow) * k_slow + ema_slow
        ema_fast = (c - ema_fast) * k_fast + ema_fast
        m = ema_fast - ema_slow
        sig_total += m
    s = sig_total / signal
    macd[lb] = m
    sig[lb] = s
    hist[lb] = m - s
    for i in range(lb + 1, n):
        c = close[i]
        ema_slow = (c - ema_slow) * k_slow + ema_slow
        ema_fast = (c - ema_fast) * k_fast + ema_fast
        m = ema_fast - ema_slow
        s = (m - s) * k_sig + s
        macd[i] = m
        sig[i] = s
        hist[i] = m - s


@njit(cache=True, nogil=True)
def macd_nb(
    close: Float64Array, fast: int, slow: int, signal: int
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Compute TA-Lib's MACD: (macd, signal, histogram), fast EMA seeded at the slow seed bar."""
    n = close.shape[0]
    macd = np.empty(n)
    sig = np.empty(n)
    hist = np.empty(n)
    macd_into_nb(close, fast, slow, signal, macd, sig, hist)
    return macd, sig, hist


# --------------------------------------------------------------------------------------------
# Bollinger Bands
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _window_sums_nb(x: Float64Array, first: int, last: int) -> tuple[float, float, float, float]:
    """Return (sum x, shift, sum(x-shift), sum((x-shift)^2)) over x[first:last+1], shift = mean."""
    total = 0.0
    for j in range(first, last + 1):
        total += x[j]
    shift = total / (last + 1 - first)
    s1 = 0.0
    s2 = 0.0
    for j in range(first, last + 1):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    return total, shift, s1, s2


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def bbands_into_nb(
    close: Float64Array,
    period: int,
    nbdevup: float,
    nbdevdn: float,
    upper: Float64Array,
    middle: Float64Array,
    lower: Float64Array,
) -> None:
    """Write TA-Lib's BBANDS (SMA middle band, population std) into the three output arrays."""
    n = close.shape[0]
    lb = period - 1
    _nan_head_nb(upper, lb)
    _nan_head_nb(middle, lb)
    _nan_head_nb(lower, lb)
    if n <= lb:
        return
    inv_p = 1.0 / period
    # Window sums of x, (x - shift) and (x - shift)^2 are moved by (entering - leaving), one
    # add per carried chain. They are recomputed exactly (shift = window mean) when the
    # variance falls below _VAR_CANCEL_RATIO of the mean squared shifted deviation (the shift
    # has drifted away from the data) or below _VAR_PEAK_RATIO of that quantity's peak since
    # the last reseed (the sums' absolute rounding error, set by the peak, would show), and at
    # least every _RESEED_PERIODS windows, which also stops the running sum of x drifting.
    total, shift, s1, s2 = _window_sums_nb(close, 0, lb)
    peak = s2 * inv_p
    countdown = _RESEED_PERIODS * period
    for i in range(lb, n):
        if i > lb:
            x = close[i]
            y = close[i - period]
            total += x - y
            dx = x - shift
            dy = y - shift
            s1 += dx - dy
            s2 += dx * dx - dy * dy
        m1 = s1 * inv_p
        msq = s2 * inv_p
        if msq > peak:
            peak = msq
        var = msq - m1 * m1
        floor = _VAR_CANCEL_RATIO * msq
        floor_peak = _VAR_PEAK_RATIO * peak
        if floor_peak > floor:
            floor = floor_peak
        countdown -= 1
        # `not >=` also reseeds on NaN, so a NaN only spoils the windows that contain it.
        if not var >= floor or countdown <= 0:
            total, shift, s1, s2 = _window_sums_nb(close, i - lb, i)
            m1 = s1 * inv_p
            msq = s2 * inv_p
            var = msq - m1 * m1
            if var <= _VAR_NOISE_RATIO * msq:  # a flat window: only rounding noise is left
                var = 0.0
            peak = msq
            countdown = _RESEED_PERIODS * period
        std = math.sqrt(var) if var > 0.0 else 0.0
        mean = total * inv_p
        middle[i] = mean
        upper[i] = mean + std * nbdevup
        lower[i] = mean - std * nbdevdn


@njit(cache=True, nogil=True)
def bbands_nb(
    close: Float64Array, period: int, nbdevup: float, nbdevdn: float
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Compute TA-Lib's BBANDS with an SMA middle band and population std: (upper, mid, lower)."""
    n = close.shape[0]
    upper = np.empty(n)
    middle = np.empty(n)
    lower = np.empty(n)
    bbands_into_nb(close, period, nbdevup, nbdevdn, upper, middle, lower)
    return upper, middle, lower


# --------------------------------------------------------------------------------------------
# ATR
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _true_range_nb(high: float, low: float, prev_close: float) -> float:
    """Return TA-Lib's true range: the largest of high-low, |prev-high| and |prev-low|."""
    greatest = high - low
    up = abs(prev_close - high)
    if up > greatest:
        greatest = up
    down = abs(prev_close - low)
    if down > greatest:
        greatest = down
    return greatest


@njit(cache=True, nogil=True, fastmath=_CONTRACT)
def atr_into_nb(
    high: Float64Array, low: Float64Array, close: Float64Array, period: int, out: Float64Array
) -> None:
    """Write TA-Lib's ATR (Wilder smoothing, SMA seed, lookback ``period``) into ``out``."""
    n = close.shape[0]
    _nan_head_nb(out, period)
    if n <= period:
        return
    # The first true range needs a previous close, so it sits on bar 1; the seed is the mean
    # of the true ranges of bars 1..period (TA-Lib's ATR(1) is the plain true range).
    total = 0.0
    for i in range(1, period + 1):
        total += _true_range_nb(high[i], low[i], close[i - 1])
    prev = total / period
    out[period] = prev
    # Wilder smoothing (prev * (period - 1) + tr) / period, with the division taken as a
    # multiplication by 1/period as in rsi_into_nb: a division in the carried chain costs twice
    # the time, and both agree with TA-Lib to a few ulps.
    pm1 = float(period - 1)
    inv_p = 1.0 / period
    for i in range(period + 1, n):
        prev = (prev * pm1 + _true_range_nb(high[i], low[i], close[i - 1])) * inv_p
        out[i] = prev


@njit(cache=True, nogil=True)
def atr_nb(high: Float64Array, low: Float64Array, close: Float64Array, period: int) -> Float64Array:
    """Compute TA-Lib's ATR: Wilder smoothing seeded by the SMA of ``period`` true ranges."""
    out = np.empty(close.shape[0])
    atr_into_nb(high, low, close, period, out)
    return out


# --------------------------------------------------------------------------------------------
# Williams %R and Stochastic
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _range_osc_nb(hh: float, ll: float, c: float, willr: bool) -> float:
    """Return Williams %R or raw Fast-K for one window, 0 on a (scale-aware) flat range."""
    rng = hh - ll
    if abs(rng) <= _TA_EPSILON * (abs(hh) + abs(ll)):
        return 0.0
    # TA-Lib 0.8 divides once and scales after: (c - lowest) / range * 100.
    if willr:
        return ((hh - c) / rng) * -100.0
    return ((c - ll) / rng) * 100.0


@njit(cache=True, nogil=True)
def _window_osc_into_nb(
    high: Float64Array,
    low: Float64Array,
    close: Float64Array,
    period: int,
    out: Float64Array,
    willr: bool,
) -> None:
    """Write %R (``willr``) or Fast-K into ``out[period-1:]`` via a van Herk block scan."""
    n = close.shape[0]
    p = period
    suf_h = np.empty(p)
    suf_l = np.empty(p)
    s = 0
    while s + p - 1 < n:
        # Suffix extrema of the block [s, s+p).
        e = s + p - 1
        hh = high[e]
        ll = low[e]
        suf_h[p - 1] = hh
        suf_l[p - 1] = ll
        for j in range(p - 2, -1, -1):
            h = high[s + j]
            lo = low[s + j]
            if h > hh:
                hh = h
            if lo < ll:
                ll = lo
            suf_h[j] = hh
            suf_l[j] = ll
        out[e] = _range_osc_nb(hh, ll, close[e], willr)
        # Window [s+m, s+m+p) for m >= 1 = suffix of this block + prefix of the next one.
        m_max = min(p - 1, n - 1 - e)
        if m_max > 0:
            ph = high[e + 1]
            pl = low[e + 1]
            for m in range(1, m_max + 1):
                x = e + m
                h = high[x]
                lo = low[x]
                if h > ph:
                    ph = h
                if lo < pl:
                    pl = lo
                hh = suf_h[m]
                ll = suf_l[m]
                if ph > hh:
                    hh = ph
                if pl < ll:
                    ll = pl
                out[x] = _range_osc_nb(hh, ll, close[x], willr)
        s += p


@njit(cache=True, nogil=True)
def willr_into_nb(
    high: Float64Array, low: Float64Array, close: Float64Array, period: int, out: Float64Array
) -> None:
    """Write TA-Lib's Williams %R over ``period`` bars into ``out`` (0 when highest == lowest)."""
    _nan_head_nb(out, period - 1)
    if close.shape[0] >= period:
        _window_osc_into_nb(high, low, close, period, out, True)


@njit(cache=True, nogil=True)
def willr_nb(
    high: Float64Array, low: Float64Array, close: Float64Array, period: int
) -> Float64Array:
    """Compute TA-Lib's Williams %R over ``period`` bars (0 when highest == lowest)."""
    out = np.empty(close.shape[0])
    willr_into_nb(high, low, close, period, out)
    return out


@njit(cache=True, nogil=True)
def stoch_into_nb(
    high: Float64Array,
    low: Float64Array,
    close: Float64Array,
    fastk_period: int,
    slowk_period: int,
    slowd_period: int,
    slowk: Float64Array,
    slowd: Float64Array,
) -> None:
    """Write TA-Lib's STOCH with SMA smoothing (slow %K, slow %D) into the two output arrays."""
    n = close.shape[0]
    a0 = fastk_period - 1  # first Fast-K bar
    b0 = a0 + slowk_period - 1  # first slow %K bar (computed, but NaN before lb)
    lb = b0 + slowd_period - 1
    if n <= lb:
        _nan_head_nb(slowk, n)
        _nan_head_nb(slowd, n)
        return
    # Fast-K goes into slowk[a0:] and is smoothed in place; a ring buffer keeps the last
    # slowk_period Fast-K values the running sum still has to subtract.
    _window_osc_into_nb(high, low, close, fastk_period, slowk, False)
    ring = np.empty(slowk_period)
    pos = 0
    # Both smoothings are TA-Lib's running-sum SMA (add, read, subtract the trailing value).
    k_total = 0.0
    for i in range(a0, b0):
        f = slowk[i]
        k_total += f
        ring[pos] = f
        pos += 1
    d_total = 0.0
    for i in range(b0, n):
        f = slowk[i]
        k_total += f
        ring[pos] = f
        k = k_total / slowk_period
        pos += 1
        if pos == slowk_period:
            pos = 0
        k_total -= ring[pos]
        slowk[i] = k
        d_total += k
        if i >= lb:
            slowd[i] = d_total / slowd_period
            d_total -= slowk[i - slowd_period + 1]
    _nan_head_nb(slowk, lb)
    _nan_head_nb(slowd, lb)


@njit(cache=True, nogil=True)
def stoch_nb(
    high: Float64Array,
    low: Float64Array,
    close: Float64Array,
    fastk_period: int,
    slowk_period: int,
    slowd_period: int,
) -> tuple[Float64Array, Float64Array]:
    """Compute TA-Lib's STOCH with SMA smoothing: (slow %K, slow %D), Fast-K 0 on flat ranges."""
    n = close.shape[0]
    slowk = np.empty(n)
    slowd = np.empty(n)
    stoch_into_nb(high, low, close, fastk_period, slowk_period, slowd_period, slowk, slowd)
    return slowk, slowd
