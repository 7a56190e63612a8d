"""The strategy language's functions: one catalogue, from which the checks, the warm-up,
the evaluation and `GET /strategies/language` all read.

Indicators call the ``shared.quant`` kernels the market service's indicators use (TA-Lib's
conventions), so a value here equals the market's. Every function reads bars up to the one
being decided only: windows look back, ``lag`` takes ``n >= 0``; nothing is centred or
reads the whole series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from shared.quant.kernels import (
    atr_nb,
    bbands_nb,
    ema_nb,
    macd_nb,
    rsi_nb,
    sma_nb,
    stoch_nb,
    willr_nb,
)

Array = np.ndarray
# Argument kinds: a series (or a number, broadcast), a window in bars (an integer), a
# non-negative shift in bars, a real number.
SERIES, WINDOW, SHIFT, REAL = "series", "window", "shift", "real"


@dataclass(frozen=True)
class Function:
    """One function: its arguments' kinds, its result, its warm-up and its computation."""

    name: str
    args: tuple[tuple[str, str], ...]  # (argument name, kind)
    doc: str
    lookback: Callable[[tuple[float, ...]], int]  # bars before the first value, from scalars
    compute: Callable[[Mapping[str, Array], tuple[Array | float, ...]], Array]
    returns: str = "series"  # or "bool"
    uses_bars: bool = False  # reads high/low/close itself (atr, stoch_k, williams_r)

    @property
    def signature(self) -> str:
        """Return how the function is called, e.g. `sma(x, n)`."""
        return f"{self.name}({', '.join(a for a, _ in self.args)})"


@njit(cache=True, nogil=True, error_model="numpy")
def highest_nb(x, n):  # type: ignore[no-untyped-def]
    """Return the highest of the last ``n`` values (this bar included); NaN before."""
    m = x.shape[0]
    out = np.full(m, np.nan)
    for t in range(n - 1, m):
        best = x[t]
        for i in range(t - n + 1, t):
            if x[i] > best or best != best:
                best = x[i]
        out[t] = best
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def lowest_nb(x, n):  # type: ignore[no-untyped-def]
    """Return the lowest of the last ``n`` values (this bar included); NaN before."""
    m = x.shape[0]
    out = np.full(m, np.nan)
    for t in range(n - 1, m):
        best = x[t]
        for i in range(t - n + 1, t):
            if x[i] < best or best != best:
                best = x[i]
        out[t] = best
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def std_nb(x, n):  # type: ignore[no-untyped-def]
    """Return the population standard deviation of the last ``n`` values (TA-Lib STDDEV)."""
    m = x.shape[0]
    out = np.full(m, np.nan)
    for t in range(n - 1, m):
        mean = 0.0
        for i in range(t - n + 1, t + 1):
            mean += x[i]
        mean /= n
        var = 0.0
        for i in range(t - n + 1, t + 1):
            d = x[i] - mean
            var += d * d
        out[t] = np.sqrt(var / n)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def crosses_nb(a, b, above):  # type: ignore[no-untyped-def]
    """Return where ``a`` crosses ``b``: ``a[t-1] < b[t-1] and a[t] > b[t]`` (above), or
    the mirror (below). Strict both sides, as backtesting.py's ``crossover``."""
    m = a.shape[0]
    out = np.zeros(m, dtype=np.bool_)
    for t in range(1, m):
        if above:
            out[t] = a[t - 1] < b[t - 1] and a[t] > b[t]
        else:
            out[t] = b[t - 1] < a[t - 1] and b[t] > a[t]
    return out


def _series(x: Array | float, n: int) -> Array:
    """Return ``x`` as a contiguous float64 series of length n."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float64)
    return np.full(n, float(x))


def _on_valid(kernel: Callable[[Array], Array], x: Array) -> Array:
    """Run ``kernel`` from ``x``'s first finite value (as the market's ``compute`` strips
    leading NaNs), NaN before."""
    finite = np.isfinite(x)
    if finite.all():
        return kernel(x)
    out = np.full(x.shape[0], np.nan)
    if not finite.any():
        return out
    first = int(np.argmax(finite))
    out[first:] = kernel(np.ascontiguousarray(x[first:]))
    return out


def _n(v: Array | float) -> int:
    return round(float(v))  # type: ignore[arg-type]


def _window(fn: Callable[[Array, int], Array]) -> Callable[..., Array]:
    def compute(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
        x = _series(a[0], bars["close"].shape[0])
        return _on_valid(lambda v: fn(v, _n(a[1])), x)

    return compute


def _lag(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
    x = _series(a[0], bars["close"].shape[0])
    n = _n(a[1])
    out = np.full(x.shape[0], np.nan)
    if n == 0:
        return x
    out[n:] = x[:-n]
    return out


def _roc(x: Array, n: int) -> Array:
    out = np.full(x.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[n:] = (x[n:] / x[:-n] - 1.0) * 100.0
    return out


def _macd(part: int) -> Callable[..., Array]:
    def compute(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
        x = _series(a[0], bars["close"].shape[0])
        signal = _n(a[3]) if len(a) > 3 else 9
        return _on_valid(lambda v: macd_nb(v, _n(a[1]), _n(a[2]), signal)[part], x)

    return compute


def _bb(upper: bool) -> Callable[..., Array]:
    def compute(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
        x = _series(a[0], bars["close"].shape[0])
        k = float(a[2])  # type: ignore[arg-type]
        return _on_valid(lambda v: bbands_nb(v, _n(a[1]), k, k)[0 if upper else 2], x)

    return compute


def _crosses(above: bool) -> Callable[..., Array]:
    def compute(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
        n = bars["close"].shape[0]
        return crosses_nb(_series(a[0], n), _series(a[1], n), above)  # type: ignore[no-any-return]

    return compute


def _elementwise(fn: Callable[..., Array]) -> Callable[..., Array]:
    def compute(bars: Mapping[str, Array], a: tuple[Array | float, ...]) -> Array:
        n = bars["close"].shape[0]
        return np.asarray(fn(*(_series(x, n) for x in a)), dtype=np.float64)

    return compute


def _i(v: float) -> int:
    return round(v)


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "sma",
            (("x", SERIES), ("n", WINDOW)),
            "simple moving average of x over n bars",
            lambda a: _i(a[1]) - 1,
            _window(sma_nb),
        ),
        Function(
            "ema",
            (("x", SERIES), ("n", WINDOW)),
            "exponential moving average (TA-Lib: seeded with the SMA of the first n bars)",
            lambda a: _i(a[1]) - 1,
            _window(ema_nb),
        ),
        Function(
            "rsi",
            (("x", SERIES), ("n", WINDOW)),
            "relative strength index 0..100 (Wilder)",
            lambda a: _i(a[1]),
            _window(rsi_nb),
        ),
        Function(
            "macd",
            (("x", SERIES), ("fast", WINDOW), ("slow", WINDOW)),
            "MACD line: ema(x, fast) - ema(x, slow), fast < slow (TA-Lib, defined once its "
            "9-bar signal is)",
            lambda a: _i(a[2]) + 9 - 2,
            _macd(0),
        ),
        Function(
            "macd_signal",
            (("x", SERIES), ("fast", WINDOW), ("slow", WINDOW), ("signal", WINDOW)),
            "signal line: ema of the MACD line over `signal` bars",
            lambda a: _i(a[2]) + _i(a[3]) - 2,
            _macd(1),
        ),
        Function(
            "bb_upper",
            (("x", SERIES), ("n", WINDOW), ("k", REAL)),
            "upper Bollinger band: sma(x, n) + k * std(x, n)",
            lambda a: _i(a[1]) - 1,
            _bb(True),
        ),
        Function(
            "bb_lower",
            (("x", SERIES), ("n", WINDOW), ("k", REAL)),
            "lower Bollinger band: sma(x, n) - k * std(x, n)",
            lambda a: _i(a[1]) - 1,
            _bb(False),
        ),
        Function(
            "atr",
            (("n", WINDOW),),
            "average true range of the bars over n (Wilder), price units",
            lambda a: _i(a[0]),
            lambda b, a: atr_nb(b["high"], b["low"], b["close"], _n(a[0])),
            uses_bars=True,
        ),
        Function(
            "stoch_k",
            (("n", WINDOW),),
            "slow stochastic %K 0..100 (n-bar %K smoothed 3, the market's defaults)",
            lambda a: _i(a[0]) - 1 + 2 + 2,
            lambda b, a: stoch_nb(b["high"], b["low"], b["close"], _n(a[0]), 3, 3)[0],
            uses_bars=True,
        ),
        Function(
            "williams_r",
            (("n", WINDOW),),
            "Williams %R -100..0 over n bars",
            lambda a: _i(a[0]) - 1,
            lambda b, a: willr_nb(b["high"], b["low"], b["close"], _n(a[0])),
            uses_bars=True,
        ),
        Function(
            "highest",
            (("x", SERIES), ("n", WINDOW)),
            "highest x of the last n bars, this bar included",
            lambda a: _i(a[1]) - 1,
            _window(highest_nb),
        ),
        Function(
            "lowest",
            (("x", SERIES), ("n", WINDOW)),
            "lowest x of the last n bars, this bar included",
            lambda a: _i(a[1]) - 1,
            _window(lowest_nb),
        ),
        Function(
            "std",
            (("x", SERIES), ("n", WINDOW)),
            "population standard deviation of x over n bars",
            lambda a: _i(a[1]) - 1,
            _window(std_nb),
        ),
        Function(
            "roc",
            (("x", SERIES), ("n", WINDOW)),
            "rate of change in percent: (x / lag(x, n) - 1) * 100",
            lambda a: _i(a[1]),
            _window(_roc),
        ),
        Function(
            "lag",
            (("x", SERIES), ("n", SHIFT)),
            "x as it was n bars ago (n >= 0: never a later bar)",
            lambda a: _i(a[1]),
            _lag,
        ),
        Function(
            "crosses_above",
            (("a", SERIES), ("b", SERIES)),
            "true on the bar a moves from below b to above it",
            lambda a: 1,
            _crosses(True),
            returns="bool",
        ),
        Function(
            "crosses_below",
            (("a", SERIES), ("b", SERIES)),
            "true on the bar a moves from above b to below it",
            lambda a: 1,
            _crosses(False),
            returns="bool",
        ),
        Function(
            "abs",
            (("x", SERIES),),
            "absolute value",
            lambda a: 0,
            _elementwise(np.abs),
        ),
        Function(
            "min",
            (("a", SERIES), ("b", SERIES)),
            "the smaller of a and b, bar by bar",
            lambda a: 0,
            _elementwise(np.minimum),
        ),
        Function(
            "max",
            (("a", SERIES), ("b", SERIES)),
            "the larger of a and b, bar by bar",
            lambda a: 0,
            _elementwise(np.maximum),
        ),
    )
}
