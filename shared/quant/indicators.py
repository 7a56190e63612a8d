"""The indicator registry: each indicator declared once, and the wrapper that runs its kernel.

An :class:`IndicatorSpec` holds everything known about one indicator: its kernel (from
:mod:`shared.quant.kernels`), its parameters (default, inclusive bounds, description), its
outputs (with descriptions), the price inputs it reads, its lookback (TA-Lib's count of leading
NaN bars), how long its seed keeps influencing later values (for warm-up), cross-parameter
checks, and its documentation (title, one-phrase definition, optional latest-value route).
Services generate their query parameters, docs and routes from these entries, so adding an
indicator is one entry in :data:`INDICATORS` plus its test against TA-Lib.

``compute(name, params, high=, low=, close=)`` validates, casts, strips leading NaNs like the
``talib`` wrapper and returns float64 arrays equal to TA-Lib's output; ``lookback`` and
``warmup_bars`` tell a caller how much earlier history a window needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from shared.quant import kernels as k
from shared.quant.kernels import Float64Array

Number = int | float
Params = Mapping[str, Any]
Series = Mapping[str, Float64Array]
Kernel = Callable[[Params, Series, Series], None]
PRICE_INPUTS = ("high", "low", "close")


@dataclass(frozen=True)
class Param:
    """One parameter: default (its type, int or float, is the parameter's), bounds, wording.

    ``doc`` describes it among every indicator's parameters (``<indicator>_<name>``);
    ``route_doc`` describes it on the indicator's own latest-value route, when it differs.
    """

    default: Number
    lo: Number
    hi: Number
    doc: str
    route_doc: str | None = None

    @property
    def is_int(self) -> bool:
        """Tell whether the parameter takes integers."""
        return isinstance(self.default, int)


@dataclass(frozen=True)
class LatestRoute:
    """A ``GET /<path>/{symbol}`` route (operation ``get_<path>``) for the latest value(s)."""

    path: str
    summary: str
    doc: str


@dataclass(frozen=True)
class IndicatorSpec:
    """Everything about one indicator; see the module docstring."""

    name: str
    title: str
    definition: str
    params: Mapping[str, Param]
    outputs: Mapping[str, str]
    inputs: tuple[str, ...]
    kernel: Kernel
    lookback: Callable[[Params], int]
    decay: Callable[[Params], float] | None = None
    chained: bool = False
    check: Callable[[Params], None] | None = None
    default: bool = False
    route: LatestRoute | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the flat names of the outputs (`rsi`, `macd_signal`, ...)."""
        return tuple(column_name(self.name, output) for output in self.outputs)


class IndicatorParamError(ValueError):
    """Signal an invalid indicator name or parameter; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def column_name(indicator: str, output: str) -> str:
    """Return an output's flat name: the indicator's own name, else `<indicator>_<output>`."""
    return output if output == indicator else f"{indicator}_{output}"


def _check_macd(p: Params) -> None:
    if p["fast"] >= p["slow"]:
        raise IndicatorParamError(
            "macd_fast",
            f"macd_fast must be less than macd_slow, got fast={p['fast']} slow={p['slow']}",
        )


def _spec(
    name: str,
    *,
    params: dict[str, Param],
    outputs: dict[str, str],
    inputs: tuple[str, ...] = ("close",),
    **rest: Any,
) -> IndicatorSpec:
    """Build a spec with read-only mappings."""
    if "close" not in inputs or any(i not in PRICE_INPUTS for i in inputs):
        raise ValueError(f"{name}: inputs must include close and be among {PRICE_INPUTS}")
    return IndicatorSpec(
        name=name,
        params=MappingProxyType(dict(params)),
        outputs=MappingProxyType(dict(outputs)),
        inputs=inputs,
        **rest,
    )


# The order is the order of the docs, the query parameters and the `values` columns.
INDICATORS: Mapping[str, IndicatorSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec(
                "rsi",
                title="Relative Strength Index",
                definition="RSI with Wilder smoothing",
                params={
                    "period": Param(14, 2, 1000, "RSI period, Wilder smoothing", "RSI period"),
                },
                outputs={"rsi": "0-100; 0 when prices did not move over the period (TA-Lib)."},
                kernel=lambda p, x, o: k.rsi_into_nb(x["close"], p["period"], o["rsi"]),
                lookback=lambda p: int(p["period"]),
                # Wilder smoothing keeps a weight (1 - 1/period)**m on the seed after m bars.
                decay=lambda p: 1.0 - 1.0 / p["period"],
                default=True,
                route=LatestRoute(
                    "rsi",
                    "Latest RSI",
                    "Return the latest RSI (0-100, Wilder smoothing) of a symbol; "
                    "above 70 is overbought.",
                ),
            ),
            _spec(
                "macd",
                title="Moving Average Convergence/Divergence",
                definition="MACD on SMA-seeded EMAs",
                params={
                    "fast": Param(12, 2, 1000, "MACD fast EMA period", "Fast EMA period"),
                    "slow": Param(
                        26,
                        2,
                        1000,
                        "MACD slow EMA period, must exceed macd_fast",
                        "Slow EMA period, must exceed fast",
                    ),
                    "signal": Param(9, 1, 1000, "MACD signal EMA period", "Signal EMA period"),
                },
                outputs={
                    "macd": "Fast EMA minus slow EMA of the close, in price units.",
                    "signal": "EMA of the MACD line.",
                    "histogram": "MACD line minus signal line.",
                },
                kernel=lambda p, x, o: k.macd_into_nb(
                    x["close"],
                    p["fast"],
                    p["slow"],
                    p["signal"],
                    o["macd"],
                    o["signal"],
                    o["histogram"],
                ),
                lookback=lambda p: int(max(p["fast"], p["slow"]) - 1 + p["signal"] - 1),
                # The price EMAs (the slow one decays slowest) feed the signal EMA; through the
                # two chained recurrences the seed error decays like (m + 1) * rate**m.
                decay=lambda p: max(1.0 - 2.0 / (p["slow"] + 1), 1.0 - 2.0 / (p["signal"] + 1)),
                chained=True,
                check=_check_macd,
                default=True,
                route=LatestRoute(
                    "macd",
                    "Latest MACD",
                    "Return the latest MACD line, signal line and histogram of a symbol.",
                ),
            ),
            _spec(
                "bbands",
                title="Bollinger Bands",
                definition="Bollinger bands with population standard deviation",
                params={
                    "period": Param(
                        20, 2, 1000, "Bollinger moving-average period", "Moving-average period"
                    ),
                    "nbdev": Param(
                        2.0,
                        0.1,
                        10.0,
                        "Bollinger width in population standard deviations",
                        "Band width in population standard deviations",
                    ),
                },
                outputs={
                    "upper": "Middle band plus `nbdev` population standard deviations.",
                    "middle": "Simple moving average of the close.",
                    "lower": "Middle band minus `nbdev` population standard deviations.",
                },
                kernel=lambda p, x, o: k.bbands_into_nb(
                    x["close"],
                    p["period"],
                    p["nbdev"],
                    p["nbdev"],
                    o["upper"],
                    o["middle"],
                    o["lower"],
                ),
                lookback=lambda p: int(p["period"]) - 1,
                default=True,
                route=LatestRoute(
                    "bollinger_bands",
                    "Latest Bollinger bands",
                    "Return the latest upper, middle (SMA) and lower Bollinger bands of a symbol.",
                ),
            ),
            _spec(
                "williams_r",
                title="Williams %R",
                definition="Williams %R",
                params={
                    "period": Param(14, 2, 1000, "Williams %R look-back period", "Look-back period")
                },
                outputs={"williams_r": "-100..0; 0 when highest high equals lowest low."},
                inputs=("high", "low", "close"),
                kernel=lambda p, x, o: k.willr_into_nb(
                    x["high"], x["low"], x["close"], p["period"], o["williams_r"]
                ),
                lookback=lambda p: int(p["period"]) - 1,
                default=True,
                route=LatestRoute(
                    "williams_r",
                    "Latest Williams %R",
                    "Return the latest Williams %R (-100..0) of a symbol; above -20 is overbought.",
                ),
            ),
            _spec(
                "stochastic",
                title="Stochastic oscillator (slow)",
                definition="slow Stochastic with SMA smoothing",
                params={
                    "k_period": Param(14, 1, 1000, "Stochastic %K look-back period"),
                    "k_smooth": Param(3, 1, 1000, "Stochastic slow-%K smoothing (SMA)"),
                    "d_period": Param(3, 1, 1000, "Stochastic %D period (SMA of slow %K)"),
                },
                outputs={
                    "k": "Slow %K, 0-100: SMA of the raw %K.",
                    "d": "Slow %D, 0-100: SMA of slow %K.",
                },
                inputs=("high", "low", "close"),
                kernel=lambda p, x, o: k.stoch_into_nb(
                    x["high"],
                    x["low"],
                    x["close"],
                    p["k_period"],
                    p["k_smooth"],
                    p["d_period"],
                    o["k"],
                    o["d"],
                ),
                lookback=lambda p: int(p["k_period"] - 1 + p["k_smooth"] - 1 + p["d_period"] - 1),
                default=True,
            ),
            _spec(
                "sma",
                title="Simple moving average",
                definition="SMA of the close",
                params={"period": Param(30, 2, 1000, "SMA period")},
                outputs={"sma": "Mean close of the last `period` bars, in price units."},
                kernel=lambda p, x, o: k.sma_into_nb(x["close"], p["period"], o["sma"]),
                lookback=lambda p: int(p["period"]) - 1,
            ),
            _spec(
                "ema",
                title="Exponential moving average",
                definition="EMA seeded with the SMA of its first `period` closes",
                params={"period": Param(30, 2, 1000, "EMA period, smoothing 2/(period+1)")},
                outputs={"ema": "Exponential moving average of the close, in price units."},
                kernel=lambda p, x, o: k.ema_into_nb(x["close"], p["period"], o["ema"]),
                lookback=lambda p: int(p["period"]) - 1,
                decay=lambda p: 1.0 - 2.0 / (p["period"] + 1),
            ),
            _spec(
                "atr",
                title="Average true range",
                definition="ATR with Wilder smoothing",
                params={"period": Param(14, 1, 1000, "ATR period, Wilder smoothing")},
                outputs={"atr": "Average true range, in price units."},
                inputs=("high", "low", "close"),
                kernel=lambda p, x, o: k.atr_into_nb(
                    x["high"], x["low"], x["close"], p["period"], o["atr"]
                ),
                lookback=lambda p: int(p["period"]),
                decay=lambda p: 1.0 - 1.0 / p["period"],
            ),
        )
    }
)


def default_names() -> list[str]:
    """Return the indicators computed when a caller names none."""
    return [name for name, spec in INDICATORS.items() if spec.default]


def all_columns() -> list[str]:
    """Return every indicator's flat output names, in registry order."""
    return [column for spec in INDICATORS.values() for column in spec.columns]


def get_spec(name: str) -> IndicatorSpec:
    """Return the spec of a public indicator name or raise IndicatorParamError."""
    spec = INDICATORS.get(name)
    if spec is None:
        known = ", ".join(sorted(INDICATORS))
        raise IndicatorParamError(
            "indicator", f"unknown indicator {name!r}; expected one of {known}"
        )
    return spec


def _cast(field: str, value: Any, param: Param) -> Number:
    """Cast one parameter value to the parameter's type (int or float)."""
    if isinstance(value, bool) or value is None:
        raise IndicatorParamError(field, f"{field} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise IndicatorParamError(field, f"{field} must be a number, got {value!r}") from None
    if not isinstance(value, int | float | np.integer | np.floating):
        raise IndicatorParamError(field, f"{field} must be a number, got {value!r}")
    number: Number = float(value) if isinstance(value, float | np.floating) else int(value)
    if isinstance(number, float) and not math.isfinite(number):
        raise IndicatorParamError(field, f"{field} must be finite, got {number!r}")
    if not param.is_int:
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise IndicatorParamError(field, f"{field} must be an integer, got {number!r}")
    return int(number)


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
    for key, param in spec.params.items():
        field = f"{name}_{key}"
        value = _cast(field, given[key], param) if key in given else param.default
        if not param.lo <= value <= param.hi:
            raise IndicatorParamError(
                field, f"{field} must be between {param.lo} and {param.hi}, got {value}"
            )
        out[key] = value
    if spec.check is not None:
        spec.check(out)
    return out


def lookback(name: str, params: Mapping[str, Any] | None = None) -> int:
    """Return the number of leading NaN bars (TA-Lib's lookback) for these parameters."""
    return get_spec(name).lookback(validate_params(name, params))


def _decay_bars(rate: float, tol: float, chained: bool = False) -> int:
    """Return the smallest m with rate**m <= tol, or (m + 1) * rate**m <= tol if chained."""
    if rate <= 0.0:
        return 0
    m = max(0, math.ceil(math.log(tol) / math.log(rate)))
    factor = 1 if not chained else m + 1
    while factor * rate**m > tol:
        m += 1
        factor = 1 if not chained else m + 1
    return m


def warmup_bars(name: str, params: Mapping[str, Any] | None = None, tol: float = 1e-12) -> int:
    """Return how many earlier bars to prepend so window values match full history within tol.

    That is the lookback plus, for the recursive indicators, the bars after which the weight
    still carried by the (truncated) seed is at most ``tol``: the difference from the value on
    the full history is then at most ``tol`` times the seed's own error, which is bounded by
    the price range (RSI: the size of the average gain/loss) over the prepended bars. Sliding
    windows (SMA, Bollinger bands, Williams %R, Stochastic) need their lookback only.
    """
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    spec = get_spec(name)
    p = validate_params(name, params)
    bars = spec.lookback(p)
    if spec.decay is not None:
        bars += _decay_bars(spec.decay(p), tol, chained=spec.chained)
    return bars


def _as_float_array(field: str, values: Any) -> Float64Array:
    """Cast a price series to a contiguous 1-D float64 array."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must be a numeric 1-D series: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{field} must be 1-D, got shape {arr.shape}")
    return arr


def _first_complete_bar(arrays: Iterable[Float64Array], n: int) -> int:
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
) -> dict[str, Float64Array]:
    """Compute an indicator's outputs (float64, NaN on warm-up bars) like TA-Lib does."""
    spec = get_spec(name)
    p = validate_params(name, params)
    given = {"high": high, "low": low, "close": close}
    series: dict[str, Float64Array] = {}
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
        spec.kernel(p, tails, {key: arr[begin:] for key, arr in out.items()})
    return out
