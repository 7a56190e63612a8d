"""Indicator registry and the thin wrapper the service layer calls.

``INDICATORS`` describes each public indicator (parameters with defaults and bounds, output
names, required price inputs); ``validate_params`` turns user input into checked parameters;
``compute`` runs the numba kernels of ``services.market.nb`` and returns float64 arrays with
NaN on the warm-up bars, equal to TA-Lib's output; ``lookback`` and ``warmup_bars`` tell the
service how much history a window needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from services.market import nb

Number = int | float


@dataclass(frozen=True)
class IndicatorSpec:
    """Describe one indicator: parameters (default, min, max), outputs and price inputs."""

    name: str
    params: Mapping[str, tuple[Number, Number, Number]]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]


def _spec(
    name: str,
    params: dict[str, tuple[Number, Number, Number]],
    outputs: tuple[str, ...],
    inputs: tuple[str, ...],
) -> IndicatorSpec:
    """Build a spec with a read-only parameter mapping."""
    return IndicatorSpec(name, MappingProxyType(dict(params)), outputs, inputs)


INDICATORS: dict[str, IndicatorSpec] = {
    spec.name: spec
    for spec in (
        _spec("rsi", {"period": (14, 2, 1000)}, ("rsi",), ("close",)),
        _spec(
            "macd",
            {"fast": (12, 2, 1000), "slow": (26, 2, 1000), "signal": (9, 1, 1000)},
            ("macd", "signal", "histogram"),
            ("close",),
        ),
        _spec(
            "bbands",
            {"period": (20, 2, 1000), "nbdev": (2.0, 0.1, 10.0)},
            ("upper", "middle", "lower"),
            ("close",),
        ),
        _spec("williams_r", {"period": (14, 2, 1000)}, ("williams_r",), ("high", "low", "close")),
        _spec(
            "stochastic",
            {"k_period": (14, 1, 1000), "k_smooth": (3, 1, 1000), "d_period": (3, 1, 1000)},
            ("k", "d"),
            ("high", "low", "close"),
        ),
    )
}


class IndicatorParamError(ValueError):
    """Signal an invalid indicator name or parameter; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def get_spec(name: str) -> IndicatorSpec:
    """Return the spec of a public indicator name or raise IndicatorParamError."""
    spec = INDICATORS.get(name)
    if spec is None:
        known = ", ".join(sorted(INDICATORS))
        raise IndicatorParamError(
            "indicator", f"unknown indicator {name!r}; expected one of {known}"
        )
    return spec


def _cast(field: str, value: Any, default: Number) -> Number:
    """Cast one parameter value to the default's type (int or float)."""
    if isinstance(value, bool) or value is None:
        raise IndicatorParamError(field, f"{field} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise IndicatorParamError(field, f"{field} must be a number, got {value!r}") from None
    if not isinstance(value, int | float | np.integer | np.floating):
        raise IndicatorParamError(field, f"{field} must be a number, got {value!r}")
    value = float(value) if isinstance(value, float | np.floating) else int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise IndicatorParamError(field, f"{field} must be finite, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, float):
            if not value.is_integer():
                raise IndicatorParamError(field, f"{field} must be an integer, got {value!r}")
            value = int(value)
        return value
    return float(value)


def validate_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Number]:
    """Fill defaults, cast and bound-check an indicator's parameters; raise on any problem."""
    spec = get_spec(name)
    given = dict(params or {})
    unknown = [key for key in given if key not in spec.params]
    if unknown:
        field = f"{name}_{unknown[0]}"
        allowed = ", ".join(spec.params)
        raise IndicatorParamError(
            field, f"{field} is not a parameter of {name}; expected one of {allowed}"
        )
    out: dict[str, Number] = {}
    for key, (default, lo, hi) in spec.params.items():
        field = f"{name}_{key}"
        value = _cast(field, given[key], default) if key in given else default
        if not lo <= value <= hi:
            raise IndicatorParamError(field, f"{field} must be between {lo} and {hi}, got {value}")
        out[key] = value
    if name == "macd" and out["fast"] >= out["slow"]:
        raise IndicatorParamError(
            "macd_fast",
            f"macd_fast must be less than macd_slow, got fast={out['fast']} slow={out['slow']}",
        )
    return out


def lookback(name: str, params: Mapping[str, Any] | None = None) -> int:
    """Return the number of leading NaN bars (TA-Lib's lookback) for these parameters."""
    p = validate_params(name, params)
    if name == "rsi":
        return int(p["period"])
    if name == "macd":
        return int(max(p["fast"], p["slow"]) - 1 + p["signal"] - 1)
    if name in ("bbands", "williams_r"):
        return int(p["period"]) - 1
    return int(p["k_period"] - 1 + p["k_smooth"] - 1 + p["d_period"] - 1)


def _decay_bars(rate: float, tol: float, chained: bool = False) -> int:
    """Return the smallest k with rate**k <= tol, or (k + 1) * rate**k <= tol if chained."""
    k = max(0, math.ceil(math.log(tol) / math.log(rate)))
    factor = 1 if not chained else k + 1
    while factor * rate**k > tol:
        k += 1
        factor = 1 if not chained else k + 1
    return k


def warmup_bars(name: str, params: Mapping[str, Any] | None = None, tol: float = 1e-12) -> int:
    """Return how many earlier bars to prepend so window values match full history within tol.

    That is the lookback plus, for the recursive indicators, the bars after which the weight
    still carried by the (truncated) seed is at most ``tol``: the difference from the value on
    the full history is then at most ``tol`` times the seed's own error, which is bounded by
    the price range (RSI: the size of the average gain/loss) over the prepended bars.
    """
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    p = validate_params(name, params)
    lb = lookback(name, p)
    if name == "rsi":
        # Wilder smoothing keeps a weight (1 - 1/period)**k on the seed after k more bars.
        return lb + _decay_bars(1.0 - 1.0 / p["period"], tol)
    if name == "macd":
        # The price EMAs (the slow one decays slowest) feed the signal EMA; through the two
        # chained recurrences the seed error decays like (k + 1) * rate**k at the slower rate.
        rate = max(1.0 - 2.0 / (p["slow"] + 1), 1.0 - 2.0 / (p["signal"] + 1))
        return lb + _decay_bars(rate, tol, chained=True)
    return lb  # bbands, williams_r, stochastic: pure sliding windows


def _run_rsi(p, high, low, close, out):
    nb.rsi_into_nb(close, p["period"], out["rsi"])


def _run_macd(p, high, low, close, out):
    nb.macd_into_nb(
        close, p["fast"], p["slow"], p["signal"], out["macd"], out["signal"], out["histogram"]
    )


def _run_bbands(p, high, low, close, out):
    dev = p["nbdev"]
    nb.bbands_into_nb(close, p["period"], dev, dev, out["upper"], out["middle"], out["lower"])


def _run_willr(p, high, low, close, out):
    nb.willr_into_nb(high, low, close, p["period"], out["williams_r"])


def _run_stoch(p, high, low, close, out):
    nb.stoch_into_nb(
        high, low, close, p["k_period"], p["k_smooth"], p["d_period"], out["k"], out["d"]
    )


_RUNNERS: dict[str, Callable[..., None]] = {
    "rsi": _run_rsi,
    "macd": _run_macd,
    "bbands": _run_bbands,
    "williams_r": _run_willr,
    "stochastic": _run_stoch,
}


def _as_float_array(field: str, values: Any) -> np.ndarray:
    """Cast a price series to a contiguous 1-D float64 array."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must be a numeric 1-D series: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{field} must be 1-D, got shape {arr.shape}")
    return arr


def _first_complete_bar(arrays: Any, n: int) -> int:
    """Return the first bar where no input is NaN (n if none), like the talib wrapper."""
    arrays = list(arrays)
    if n == 0 or not any(math.isnan(arr[0]) for arr in arrays):
        return 0
    valid = np.ones(n, dtype=bool)
    for arr in arrays:
        valid &= ~np.isnan(arr)
    return int(np.argmax(valid)) if valid.any() else n


def compute(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    high: Any = None,
    low: Any = None,
    close: Any = None,
) -> dict[str, np.ndarray]:
    """Compute an indicator's outputs (float64, NaN on warm-up bars) like TA-Lib does."""
    spec = get_spec(name)
    p = validate_params(name, params)
    given = {"high": high, "low": low, "close": close}
    series: dict[str, np.ndarray] = {}
    for field in spec.inputs:
        if given[field] is None:
            raise ValueError(f"{name} needs {', '.join(spec.inputs)}; {field} is missing")
        series[field] = _as_float_array(field, given[field])
    n = series["close"].shape[0]
    for field, arr in series.items():
        if arr.shape[0] != n:
            raise ValueError(f"{field} has {arr.shape[0]} bars but close has {n}")
    begin = _first_complete_bar(series.values(), n)
    out = {key: np.empty(n) for key in spec.outputs}
    if begin:
        for arr in out.values():
            arr[:begin] = np.nan
    if begin < n:
        tails = {field: arr[begin:] for field, arr in series.items()}
        _RUNNERS[name](
            p,
            tails.get("high"),
            tails.get("low"),
            tails["close"],
            {key: arr[begin:] for key, arr in out.items()},
        )
    return out
