"""Fifty model features per bar, computed from past and present bars only.

:data:`FEATURES` is the registry: for each feature its name, a description (units included)
and two bar counts. ``lookback`` is the number of leading rows that are NaN because the
feature's window is not yet full. ``warmup`` is how many earlier bars a window must be given so
that its values equal those computed on the full history: the lookback for sliding-window
features (equal up to the rounding of the kernels' running sums), plus, for the recursive
indicators (RSI, MACD, EMA, ATR), the bars after which the weight still carried by their seed
is at most ``WARMUP_TOL`` (equal to within that relative tolerance). :data:`LOOKBACK` and
:data:`WARMUP` are the maxima over all features: fetch ``WARMUP`` bars before a window's start
and drop them from the answer.

:func:`compute_features` takes the bar arrays (numpy, pandas or lists), checks them and returns
``(names, matrix)``: a float64 matrix with one row per bar and one column per feature, in
registry order. Nothing here does I/O. Every value at bar t is a function of bars 0..t only
(bar t's own open, high, low, close, volume and timestamp included: a feature row is known at
the bar's close). All but ``log_volume`` are free of the price and share scale (returns,
ratios, oscillators rescaled to about -1..1 or 0..1), so a model can read several symbols.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from shared.quant.indicators import compute, lookback, warmup_bars
from shared.quant.kernels import Float64Array

WARMUP_TOL = 1e-12
_EPS = 1e-12  # a window's spread below this (relative) counts as zero


class FeatureInputError(ValueError):
    """Signal invalid bar input; ``field`` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: name, description, leading NaN rows, bars needed for full-history values."""

    name: str
    description: str
    lookback: int
    warmup: int


def _ind(name: str, **params: Any) -> tuple[int, int]:
    """Return (lookback, warmup) of a registry indicator with these parameters."""
    return lookback(name, params), warmup_bars(name, params, tol=WARMUP_TOL)


def _win(bars: int) -> tuple[int, int]:
    """Return (lookback, warmup) of a sliding-window feature: both the lookback."""
    return bars, bars


_MACD = _ind("macd", fast=12, slow=26, signal=9)
_BB = _ind("bbands", period=20, nbdev=2.0)
_STOCH = _ind("stochastic", k_period=14, k_smooth=3, d_period=3)

# (name, description, (lookback, warmup)), in column order.
_TABLE: tuple[tuple[str, str, tuple[int, int]], ...] = (
    ("ret_1", "Simple return of the close over 1 bar: close[t] / close[t-1] - 1.", _win(1)),
    ("ret_5", "Simple return of the close over 5 bars (a trading week).", _win(5)),
    ("ret_10", "Simple return of the close over 10 bars.", _win(10)),
    ("ret_21", "Simple return of the close over 21 bars (a trading month).", _win(21)),
    ("log_ret_1", "Log return of the close over 1 bar: ln(close[t] / close[t-1]).", _win(1)),
    ("log_ret_5", "Log return of the close over 5 bars.", _win(5)),
    ("log_ret_21", "Log return of the close over 21 bars.", _win(21)),
    ("log_ret_63", "Log return of the close over 63 bars (a quarter).", _win(63)),
    ("gap", "Overnight gap: ln(open[t] / close[t-1]).", _win(1)),
    ("intraday_ret", "Open-to-close log return of the bar: ln(close / open).", _win(0)),
    ("bar_range", "High-low range of the bar in log terms: ln(high / low).", _win(0)),
    (
        "close_location",
        "Where the close sits in the bar's range: (close - low) / (high - low), 0..1; "
        "0.5 when high equals low.",
        _win(0),
    ),
    (
        "volatility_5",
        "Realised volatility: sample standard deviation of 1-bar log returns over 5 bars "
        "(per bar, not annualised).",
        _win(5),
    ),
    ("volatility_10", "Realised volatility over 10 bars (as volatility_5).", _win(10)),
    ("volatility_21", "Realised volatility over 21 bars (as volatility_5).", _win(21)),
    ("volatility_63", "Realised volatility over 63 bars (as volatility_5).", _win(63)),
    (
        "parkinson_21",
        "Parkinson range volatility over 21 bars: sqrt(mean(ln(high/low)^2) / (4 ln 2)).",
        _win(20),
    ),
    (
        "volatility_ratio",
        "Volatility regime: volatility_5 / volatility_21 (1 when volatility_21 is zero).",
        _win(21),
    ),
    ("log_volume", "Log volume: ln(1 + volume).", _win(0)),
    ("volume_change", "Change of log volume over 1 bar: log_volume[t] - log_volume[t-1].", _win(1)),
    (
        "rel_volume_5",
        "Log volume relative to its 5-bar mean: log_volume - mean(log_volume, 5).",
        _win(4),
    ),
    (
        "rel_volume_21",
        "Log volume relative to its 21-bar mean: log_volume - mean(log_volume, 21).",
        _win(20),
    ),
    (
        "volume_zscore_21",
        "z-score of log volume in its 21-bar window (0 when the window is flat).",
        _win(20),
    ),
    (
        "volume_flow_21",
        "Signed volume share over 21 bars: sum(sign(ret_1) * volume) / sum(volume), -1..1 "
        "(0 without volume).",
        _win(21),
    ),
    (
        "rsi_7",
        "RSI over 7 bars (Wilder smoothing) / 100, 0..1.",
        _ind("rsi", period=7),
    ),
    ("rsi_14", "RSI over 14 bars (Wilder smoothing) / 100, 0..1.", _ind("rsi", period=14)),
    ("rsi_21", "RSI over 21 bars (Wilder smoothing) / 100, 0..1.", _ind("rsi", period=21)),
    ("macd", "MACD line (EMA 12 - EMA 26 of the close) / close.", _MACD),
    ("macd_signal", "MACD signal line (EMA 9 of the MACD line) / close.", _MACD),
    ("macd_histogram", "MACD histogram (MACD line - signal line) / close.", _MACD),
    (
        "bb_percent_b",
        "Bollinger %B (20 bars, 2 population sd): (close - lower) / (upper - lower); 0.5 "
        "when the bands touch.",
        _BB,
    ),
    ("bb_width", "Bollinger band width (20 bars, 2 sd): (upper - lower) / middle.", _BB),
    (
        "williams_r_14",
        "Williams %R over 14 bars / 100, -1..0.",
        _ind("williams_r", period=14),
    ),
    (
        "williams_r_28",
        "Williams %R over 28 bars / 100, -1..0.",
        _ind("williams_r", period=28),
    ),
    ("stoch_k", "Slow stochastic %K (14, 3) / 100, 0..1.", _STOCH),
    ("stoch_d", "Slow stochastic %D (14, 3, 3) / 100, 0..1.", _STOCH),
    ("atr_14", "Average true range over 14 bars (Wilder) / close.", _ind("atr", period=14)),
    ("dist_sma_5", "Distance of the close to its 5-bar SMA: close / sma - 1.", _win(4)),
    ("dist_sma_10", "Distance of the close to its 10-bar SMA: close / sma - 1.", _win(9)),
    ("dist_sma_21", "Distance of the close to its 21-bar SMA: close / sma - 1.", _win(20)),
    ("dist_sma_50", "Distance of the close to its 50-bar SMA: close / sma - 1.", _win(49)),
    (
        "dist_ema_12",
        "Distance of the close to its 12-bar EMA: close / ema - 1.",
        _ind("ema", period=12),
    ),
    (
        "dist_ema_26",
        "Distance of the close to its 26-bar EMA: close / ema - 1.",
        _ind("ema", period=26),
    ),
    ("sma_5_21", "Short over long trend: sma(5) / sma(21) - 1.", _win(20)),
    (
        "dist_high_21",
        "Distance of the close below the 21-bar highest high: close / max(high) - 1, <= 0.",
        _win(20),
    ),
    (
        "dist_low_21",
        "Distance of the close above the 21-bar lowest low: close / min(low) - 1, >= 0.",
        _win(20),
    ),
    ("day_of_week_sin", "sin(2 pi weekday / 7) of the bar's date (Monday = 0).", _win(0)),
    ("day_of_week_cos", "cos(2 pi weekday / 7) of the bar's date.", _win(0)),
    ("month_sin", "sin(2 pi (month - 1) / 12) of the bar's date.", _win(0)),
    ("month_cos", "cos(2 pi (month - 1) / 12) of the bar's date.", _win(0)),
)

FEATURES: Mapping[str, FeatureSpec] = MappingProxyType(
    {name: FeatureSpec(name, text, lb, wu) for name, text, (lb, wu) in _TABLE}
)
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)
LOOKBACK: int = max(spec.lookback for spec in FEATURES.values())
WARMUP: int = max(spec.warmup for spec in FEATURES.values())


def feature_names() -> list[str]:
    """Return the feature names in column order."""
    return list(FEATURE_NAMES)


# ---- input checks ----------------------------------------------------------------------


def _series(field: str, values: Any) -> Float64Array:
    """Cast one bar series to a contiguous 1-D float64 array of finite values."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeatureInputError(field, f"{field} must be a numeric 1-D series: {exc}") from None
    if arr.ndim != 1:
        raise FeatureInputError(field, f"{field} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise FeatureInputError(field, f"{field} must be finite (no NaN or infinity)")
    return arr


def _calendar(timestamps: Any, n: int) -> tuple[Float64Array, Float64Array]:
    """Return (weekday 0-6, month 1-12) of each bar; timestamps must strictly increase."""
    try:
        index = pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamps)))
    except (TypeError, ValueError) as exc:
        raise FeatureInputError("timestamps", f"timestamps must be dates: {exc}") from None
    if len(index) != n:
        raise FeatureInputError("timestamps", f"timestamps has {len(index)} bars but close has {n}")
    if index.hasnans:
        raise FeatureInputError("timestamps", "timestamps must not contain missing values")
    if n > 1 and not (index[1:] > index[:-1]).all():
        raise FeatureInputError("timestamps", "timestamps must be strictly increasing")
    weekday = np.asarray(index.day_of_week, dtype=np.float64)
    month = np.asarray(index.month, dtype=np.float64)
    return weekday, month


# ---- window helpers (each window computed on its own: windowed == full history) ----------


def _rolling(x: Float64Array, window: int, fn: Callable[[Any], Any]) -> Float64Array:
    """Apply fn along each length-window slice ending at t; NaN before the first full one."""
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] >= window:
        out[window - 1 :] = fn(sliding_window_view(x, window))
    return out


def _mean(x: Float64Array, window: int) -> Float64Array:
    return _rolling(x, window, lambda v: v.mean(axis=1))


def _std(x: Float64Array, window: int) -> Float64Array:
    """Return the sample standard deviation (ddof=1) over each window."""
    return _rolling(x, window, lambda v: v.std(axis=1, ddof=1))


def _shift(x: Float64Array, bars: int) -> Float64Array:
    """Return x delayed by `bars` (NaN on the first `bars` rows)."""
    out = np.full(x.shape[0], np.nan)
    if bars < x.shape[0]:
        out[bars:] = x[: x.shape[0] - bars]
    return out


def _ratio(num: Float64Array, den: Float64Array, default: float) -> Float64Array:
    """Return num / den, `default` where |den| is (relatively) zero, NaN where either is."""
    small = np.abs(den) <= _EPS * np.maximum(np.abs(num), 1.0)
    safe = np.where(small, 1.0, den)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(small, default, num / safe)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return np.asarray(out, dtype=np.float64)


# ---- feature groups --------------------------------------------------------------------


def _price_features(
    o: Float64Array, h: Float64Array, lo: Float64Array, c: Float64Array
) -> dict[str, Float64Array]:
    """Returns, log returns, bar shape and realised volatility."""
    f: dict[str, Float64Array] = {}
    logc = np.log(c)
    for k in (1, 5, 10, 21):
        f[f"ret_{k}"] = c / _shift(c, k) - 1.0
    for k in (1, 5, 21, 63):
        f[f"log_ret_{k}"] = logc - _shift(logc, k)
    f["gap"] = np.log(o) - _shift(logc, 1)
    f["intraday_ret"] = logc - np.log(o)
    hl = np.log(h) - np.log(lo)
    f["bar_range"] = hl
    f["close_location"] = _ratio(c - lo, h - lo, 0.5)
    r1 = f["log_ret_1"]
    for k in (5, 10, 21, 63):
        f[f"volatility_{k}"] = _std(r1, k)
    f["parkinson_21"] = np.sqrt(_mean(hl * hl, 21) / (4.0 * math.log(2.0)))
    f["volatility_ratio"] = _ratio(f["volatility_5"], f["volatility_21"], 1.0)
    return f


def _volume_features(c: Float64Array, v: Float64Array) -> dict[str, Float64Array]:
    """Log volume and its changes, relative levels, z-score and signed flow."""
    f: dict[str, Float64Array] = {}
    lv = np.log1p(v)
    f["log_volume"] = lv
    f["volume_change"] = lv - _shift(lv, 1)
    f["rel_volume_5"] = lv - _mean(lv, 5)
    m21 = _mean(lv, 21)
    f["rel_volume_21"] = lv - m21
    f["volume_zscore_21"] = _ratio(lv - m21, _std(lv, 21), 0.0)
    signed = np.sign(c - _shift(c, 1)) * v  # NaN on bar 0, so the flow starts at bar 21
    flow = _rolling(signed, 21, lambda w: w.sum(axis=1))
    f["volume_flow_21"] = _ratio(flow, _rolling(v, 21, lambda w: w.sum(axis=1)), 0.0)
    return f


def _indicator_features(
    h: Float64Array, lo: Float64Array, c: Float64Array
) -> dict[str, Float64Array]:
    """The registry indicators, rescaled to be scale-free."""
    f: dict[str, Float64Array] = {}
    for period in (7, 14, 21):
        f[f"rsi_{period}"] = compute("rsi", {"period": period}, close=c)["rsi"] / 100.0
    macd = compute("macd", {"fast": 12, "slow": 26, "signal": 9}, close=c)
    f["macd"] = macd["macd"] / c
    f["macd_signal"] = macd["signal"] / c
    f["macd_histogram"] = macd["histogram"] / c
    bb = compute("bbands", {"period": 20, "nbdev": 2.0}, close=c)
    f["bb_percent_b"] = _ratio(c - bb["lower"], bb["upper"] - bb["lower"], 0.5)
    f["bb_width"] = (bb["upper"] - bb["lower"]) / bb["middle"]
    for period in (14, 28):
        wr = compute("williams_r", {"period": period}, high=h, low=lo, close=c)
        f[f"williams_r_{period}"] = wr["williams_r"] / 100.0
    st = compute(
        "stochastic", {"k_period": 14, "k_smooth": 3, "d_period": 3}, high=h, low=lo, close=c
    )
    f["stoch_k"] = st["k"] / 100.0
    f["stoch_d"] = st["d"] / 100.0
    f["atr_14"] = compute("atr", {"period": 14}, high=h, low=lo, close=c)["atr"] / c
    return f


def _trend_features(h: Float64Array, lo: Float64Array, c: Float64Array) -> dict[str, Float64Array]:
    """Distances of the close to moving averages and to its recent extremes."""
    f: dict[str, Float64Array] = {}
    sma = {k: _mean(c, k) for k in (5, 10, 21, 50)}
    for k, avg in sma.items():
        f[f"dist_sma_{k}"] = c / avg - 1.0
    for k in (12, 26):
        f[f"dist_ema_{k}"] = c / compute("ema", {"period": k}, close=c)["ema"] - 1.0
    f["sma_5_21"] = sma[5] / sma[21] - 1.0
    f["dist_high_21"] = c / _rolling(h, 21, lambda w: w.max(axis=1)) - 1.0
    f["dist_low_21"] = c / _rolling(lo, 21, lambda w: w.min(axis=1)) - 1.0
    return f


def _calendar_features(weekday: Float64Array, month: Float64Array) -> dict[str, Float64Array]:
    """Weekday and month on the unit circle."""
    dow = 2.0 * math.pi * weekday / 7.0
    mon = 2.0 * math.pi * (month - 1.0) / 12.0
    return {
        "day_of_week_sin": np.sin(dow),
        "day_of_week_cos": np.cos(dow),
        "month_sin": np.sin(mon),
        "month_cos": np.cos(mon),
    }


def compute_features(
    open: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
    timestamps: Any,
) -> tuple[list[str], Float64Array]:
    """Compute the feature matrix (bars x features, float64, NaN on warm-up rows) of OHLCV bars."""
    o = _series("open", open)
    h = _series("high", high)
    lo = _series("low", low)
    c = _series("close", close)
    v = _series("volume", volume)
    n = c.shape[0]
    for field, arr in (("open", o), ("high", h), ("low", lo), ("volume", v)):
        if arr.shape[0] != n:
            raise FeatureInputError(field, f"{field} has {arr.shape[0]} bars but close has {n}")
    for field, arr in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if n and arr.min() <= 0.0:
            raise FeatureInputError(field, f"{field} must be positive")
    if n and v.min() < 0.0:
        raise FeatureInputError("volume", "volume must not be negative")
    if n and (h < lo).any():
        raise FeatureInputError("high", "high must not be below low")
    weekday, month = _calendar(timestamps, n)

    columns: dict[str, Float64Array] = {}
    columns.update(_price_features(o, h, lo, c))
    columns.update(_volume_features(c, v))
    columns.update(_indicator_features(h, lo, c))
    columns.update(_trend_features(h, lo, c))
    columns.update(_calendar_features(weekday, month))
    matrix = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    for j, name in enumerate(FEATURE_NAMES):
        col = columns[name]
        matrix[:, j] = col
        matrix[: FEATURES[name].lookback, j] = np.nan
    return list(FEATURE_NAMES), matrix
