"""Direction labels `down | neutral | up` over a horizon, with a volatility-scaled neutral band.

The label of bar t compares the log return from close[t] to close[t + horizon] with a band
``band * sigma_t * sqrt(horizon)``, where ``sigma_t`` is the realised volatility (sample
standard deviation of 1-bar log returns) over the ``vol_window`` bars ending at t. So a label
reads bars up to t + horizon and nothing later; the band itself is known at t. Labels are
float64 class indices (0 down, 1 neutral, 2 up) with NaN where they are undefined: the last
``horizon`` bars (their future is unknown) and the first ``vol_window`` bars.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from services.predictor.ml.types import CLASSES, DOWN, NEUTRAL, UP, FloatArray

__all__ = ["CLASSES", "forward_returns", "make_labels", "trailing_volatility"]


def _close(close: object) -> FloatArray:
    """Cast a close series to a 1-D float64 array of positive finite values."""
    arr = np.ascontiguousarray(close, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"close must be 1-D, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError("close must be positive and finite")
    return arr


def _check(horizon: int, vol_window: int, band: float) -> None:
    """Reject parameters that make no label."""
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if int(vol_window) != vol_window or vol_window < 2:
        raise ValueError(f"vol_window must be an integer >= 2, got {vol_window!r}")
    if not (np.isfinite(band) and band >= 0.0):
        raise ValueError(f"band must be finite and >= 0, got {band!r}")


def trailing_volatility(close: object, vol_window: int = 21) -> FloatArray:
    """Return the sample std of 1-bar log returns over the vol_window bars ending at each bar."""
    c = _close(close)
    _check(1, vol_window, 0.0)
    out = np.full(c.shape[0], np.nan)
    r = np.diff(np.log(c))
    if r.shape[0] >= vol_window:
        out[vol_window:] = sliding_window_view(r, vol_window).std(axis=1, ddof=1)
    return out


def forward_returns(close: object, horizon: int = 1) -> FloatArray:
    """Return the simple return from close[t] to close[t + horizon] (NaN for the last bars)."""
    c = _close(close)
    _check(horizon, 2, 0.0)
    out = np.full(c.shape[0], np.nan)
    if c.shape[0] > horizon:
        out[:-horizon] = c[horizon:] / c[:-horizon] - 1.0
    return out


def make_labels(
    close: object, horizon: int = 1, band: float = 0.5, vol_window: int = 21
) -> FloatArray:
    """Return the class of each bar (0 down, 1 neutral, 2 up; NaN where undefined)."""
    c = _close(close)
    _check(horizon, vol_window, band)
    n = c.shape[0]
    out = np.full(n, np.nan)
    if n <= horizon:
        return out
    fwd = np.full(n, np.nan)
    fwd[:-horizon] = np.log(c[horizon:]) - np.log(c[:-horizon])
    threshold = band * trailing_volatility(c, vol_window) * np.sqrt(horizon)
    ok = np.isfinite(fwd) & np.isfinite(threshold)
    out[ok] = NEUTRAL
    out[ok & (fwd > threshold)] = UP
    out[ok & (fwd < -threshold)] = DOWN
    return out
