"""Strategies: validated parameters in, a target-position matrix out (see ``engine.core``).

Each strategy is one entry in ``STRATEGIES``: its name, a one-line description, its pydantic
parameter model (bounds and cross checks, the schema ``GET /strategies`` lists) and the
function that turns bars into targets. Indicators come from ``shared.quant.kernels``.
A target at bar ``t`` uses bars up to ``t`` only; NaN means "no change".

``ml_ensemble`` takes its targets from a ``SignalProvider``: the predictor plugs in there
(``ArraySignals`` wraps targets computed elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import annotated_types as at
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.backtest.engine.analysis import SweepResult
from services.backtest.engine.core import SimSpec
from services.backtest.engine.runner import Bars
from services.backtest.engine.signals import crossover_target_nb, mean_reversion_target_nb
from shared.quant.kernels import bbands_nb, macd_nb, rsi_nb, sma_nb


class _Params(BaseModel):
    """Base of the parameter models: unknown parameters are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def _after(name: str, value: int, info: ValidationInfo, other: str) -> int:
    """Check ``value`` is above the already-validated field ``other``."""
    low = info.data.get(other)
    if low is not None and value <= low:
        raise ValueError(f"{name} ({value}) must be greater than {other} ({low})")
    return value


class BuyAndHoldParams(_Params):
    """Buy at the first bar allowed to trade and hold to the end."""


class SmaCrossoverParams(_Params):
    """Long when the fast SMA crosses above the slow one; short (or flat) when below."""

    fast: int = Field(default=10, ge=2, le=500, description="Fast SMA window, bars.")
    slow: int = Field(
        default=30, ge=3, le=1000, validate_default=True, description="Slow SMA window (> fast)."
    )
    allow_short: bool = Field(default=False, description="Go short on a downward cross.")

    @field_validator("slow")
    @classmethod
    def _slow_after_fast(cls, v: int, info: ValidationInfo) -> int:
        return _after("slow", v, info, "fast")


class MeanReversionParams(_Params):
    """Buy a close below the lower Bollinger Band with RSI oversold; exit at the middle band."""

    rsi_period: int = Field(default=14, ge=2, le=100, description="RSI lookback, bars.")
    bb_period: int = Field(default=20, ge=2, le=200, description="Bollinger Band window, bars.")
    bb_std: float = Field(default=2.0, gt=0, le=5, description="Band width in std devs.")
    oversold: float = Field(default=30.0, gt=0, lt=100, description="RSI level to buy below.")
    overbought: float = Field(
        default=70.0,
        gt=0,
        lt=100,
        validate_default=True,
        description="RSI level to short above (> oversold).",
    )
    allow_short: bool = Field(default=False, description="Short above the upper band.")

    @field_validator("overbought")
    @classmethod
    def _overbought_above(cls, v: float, info: ValidationInfo) -> float:
        low = info.data.get("oversold")
        if low is not None and v <= low:
            raise ValueError(f"overbought ({v}) must be greater than oversold ({low})")
        return v


class MacdTrendParams(_Params):
    """Long when the MACD line crosses above its signal line; short (or flat) below."""

    fast: int = Field(default=12, ge=2, le=200, description="Fast EMA window, bars.")
    slow: int = Field(
        default=26, ge=3, le=400, validate_default=True, description="Slow EMA window (> fast)."
    )
    signal: int = Field(default=9, ge=2, le=100, description="Signal EMA window, bars.")
    allow_short: bool = Field(default=False, description="Go short on a downward cross.")

    @field_validator("slow")
    @classmethod
    def _slow_after_fast(cls, v: int, info: ValidationInfo) -> int:
        return _after("slow", v, info, "fast")


# The predictor's names (its contract, not its code): a model name and a semantic version.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"
VERSION_PATTERN = r"^[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,5}$"


Member = Literal["lstm", "xgboost"]
MEMBERS: tuple[Member, ...] = ("lstm", "xgboost")


class MlTraining(_Params):
    """How `POST /walk_forward` trains the ensemble in each window (in-sample bars only)."""

    model: str = Field(
        default="walk-forward",
        pattern=MODEL_PATTERN,
        description="Registry name the windows' versions are trained under, kept apart from "
        "the models you trade (the registry keeps only its last few versions).",
    )
    models: list[Member] = Field(
        default_factory=lambda: list(MEMBERS),
        min_length=1,
        max_length=2,
        json_schema_extra={"uniqueItems": True},
        description="Ensemble members to train, each at most once.",
    )
    horizon: int = Field(default=1, ge=1, le=20, description="Bars ahead each call is about.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Training seed.")
    lstm_size: Literal["seed", "small"] = Field(
        default="small",
        description="`seed`: the design's full LSTM (minutes per window on two cores); "
        "`small`: a 20-step LSTM 16/16/8 (seconds).",
    )
    epochs: int = Field(default=20, ge=1, le=200, description="Most LSTM epochs per training.")
    batch_size: int = Field(default=64, ge=32, le=1024, description="LSTM samples per step.")

    @field_validator("models")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each member at most once")
        return v


class MlEnsembleParams(_Params):
    """Trade the predictor's ensemble calls: `up` goes long, `down` short (or flat), `neutral`
    or a call below `min_confidence` per `on_uncertain`. A call at a bar's close fills like
    any order (next open by default)."""

    model: str = Field(
        default="default", pattern=MODEL_PATTERN, description="Predictor model name to trade."
    )
    version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="Model version (default: the active one; the run stores the one used).",
    )
    min_confidence: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="Calls whose probability is below this are treated as uncertain.",
    )
    on_uncertain: Literal["flat", "hold"] = Field(
        default="flat",
        description="What a `neutral` or under-confident call does: `flat` closes the "
        "position, `hold` keeps it.",
    )
    allow_short: bool = Field(default=False, description="Go short on `down` (else flat).")
    training: MlTraining = Field(
        default_factory=MlTraining,
        description="Walk-forward only: how each window trains its own version.",
    )


@runtime_checkable
class SignalProvider(Protocol):
    """Something that gives a target per bar and symbol from data up to that bar."""

    def targets(self, bars: Bars) -> np.ndarray:
        """Return the (n_bars, n_symbols) target matrix for ``bars``."""
        ...


@dataclass(frozen=True)
class ArraySignals:
    """A signal provider over targets computed elsewhere (one column per symbol)."""

    values: np.ndarray

    def targets(self, bars: Bars) -> np.ndarray:
        """Return the stored targets, checked against the bars' shape."""
        t = np.asarray(self.values, dtype=np.float64)
        if t.ndim == 1:
            t = t[:, None]
        if t.shape != bars.close.shape:
            raise ValueError(f"signals: shape {t.shape} differs from the bars' {bars.close.shape}")
        return t


def _per_symbol(bars: Bars, fn: Callable[[int], np.ndarray]) -> np.ndarray:
    """Return the (n, m) matrix of ``fn(j)`` for every symbol column."""
    return np.column_stack([fn(j) for j in range(bars.n_symbols)])


def _buy_and_hold(bars: Bars, p: BuyAndHoldParams) -> np.ndarray:
    """Return +1 on every bar (the engine enters at the first bar allowed, then holds)."""
    return np.ones_like(bars.close)


def _sma_crossover(bars: Bars, p: SmaCrossoverParams) -> np.ndarray:
    """Return SMA crossover targets."""

    def one(j: int) -> np.ndarray:
        c = bars.close[:, j].copy()
        return crossover_target_nb(sma_nb(c, p.fast), sma_nb(c, p.slow), p.allow_short)

    return _per_symbol(bars, one)


def _mean_reversion(bars: Bars, p: MeanReversionParams) -> np.ndarray:
    """Return RSI + Bollinger Band mean-reversion targets."""

    def one(j: int) -> np.ndarray:
        c = bars.close[:, j].copy()
        upper, middle, lower = bbands_nb(c, p.bb_period, p.bb_std, p.bb_std)
        return mean_reversion_target_nb(
            c,
            rsi_nb(c, p.rsi_period),
            upper,
            middle,
            lower,
            p.oversold,
            p.overbought,
            p.allow_short,
        )

    return _per_symbol(bars, one)


def _macd_trend(bars: Bars, p: MacdTrendParams) -> np.ndarray:
    """Return MACD / signal-line crossover targets."""

    def one(j: int) -> np.ndarray:
        c = bars.close[:, j].copy()
        line, sig, _ = macd_nb(c, p.fast, p.slow, p.signal)
        return crossover_target_nb(line, sig, p.allow_short)

    return _per_symbol(bars, one)


_BOUNDS: dict[type, Callable[[np.ndarray, Any], np.ndarray]] = {
    at.Ge: lambda v, c: v >= c.ge,
    at.Gt: lambda v, c: v > c.gt,
    at.Le: lambda v, c: v <= c.le,
    at.Lt: lambda v, c: v < c.lt,
}


class SweepMany(Protocol):
    """Backtest every combination of a strategy on one symbol's bars, or answer None
    (the caller then builds the targets with ``build_many`` and runs the target sweep)."""

    def __call__(
        self,
        bars: Bars,
        fixed: Mapping[str, Any],
        combos: Sequence[Mapping[str, Any]],
        spec: SimSpec,
        *,
        risk_free_rate: float,
        keep_returns: bool,
        n_blocks: int,
        atr: np.ndarray | None,
    ) -> SweepResult | None:
        """Return one statistics row (and block sums, returns) per combination, or None."""
        ...


@dataclass(frozen=True)
class StrategyDef:
    """One strategy: its parameter model and its target builder.

    ``above`` lists the model's cross-field rules as (field, lower field) pairs: the first
    must be greater than the second (the model's own validators say so too; ``valid`` reads
    them from here, and a test holds the two to the same answers).
    """

    name: str
    description: str
    params: type[_Params]
    build: Callable[[Bars, Any], np.ndarray]
    needs_signals: bool = False
    above: tuple[tuple[str, str], ...] = ()
    # Strategies written in the language (``language.registry``): whether they go short,
    # their rules' text, and a batch builder sharing indicator results across combinations.
    short: bool | None = None
    rules: dict[str, str] | None = None
    build_many: Callable[[Bars, dict[str, Any], Sequence[Mapping[str, Any]]], np.ndarray] | None = (
        None
    )
    sweep_many: SweepMany | None = None  # the combinations' backtests in one parallel pass
    version: int | None = None

    def shorts(self, params: BaseModel) -> bool:
        """Return whether these parameters let the strategy go short."""
        if self.short is not None:
            return self.short
        return allows_short(params)

    def parse(self, raw: dict[str, Any] | BaseModel | None) -> _Params:
        """Return validated parameters (pydantic ValidationError on bad input)."""
        if isinstance(raw, self.params):
            return raw
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        return self.params.model_validate(raw or {})

    def in_bounds(self, name: str, values: np.ndarray) -> np.ndarray | None:
        """Return which of one parameter's values its own bounds accept (None: unknown)."""
        ok = np.ones(len(values), dtype=bool)
        for bound in self.params.model_fields[name].metadata:
            check = _BOUNDS.get(type(bound))
            if check is None:
                return None
            ok &= check(values, bound)
        return ok

    def valid(
        self, columns: Mapping[str, np.ndarray], fixed: Mapping[str, Any]
    ) -> np.ndarray | None:
        """Return which rows of numeric parameter ``columns`` (over ``fixed``) ``parse`` accepts.

        The same bounds and cross-field rules as the model, checked on whole columns at
        once: a grid of a million combinations in milliseconds, where validating each
        combination costs microseconds. Fields missing from ``columns`` take ``fixed``'s
        value (already valid). None when a field has a constraint this does not know (the
        caller then asks ``parse`` row by row).
        """
        size = len(next(iter(columns.values()))) if columns else 1
        ok = np.ones(size, dtype=bool)
        values = {**fixed, **columns}
        for name, column in columns.items():
            info = self.params.model_fields[name]
            for bound in info.metadata:
                check = _BOUNDS.get(type(bound))
                if check is None:
                    return None
                ok &= check(column, bound)
        for high, low in self.above:
            if high in columns or low in columns:
                ok &= np.asarray(values[high]) > np.asarray(values[low])
        return ok


STRATEGIES: dict[str, StrategyDef] = {
    d.name: d
    for d in (
        StrategyDef(
            "buy_and_hold", "Buy once and hold to the end.", BuyAndHoldParams, _buy_and_hold
        ),
        StrategyDef(
            "sma_crossover",
            SmaCrossoverParams.__doc__ or "",
            SmaCrossoverParams,
            _sma_crossover,
            above=(("slow", "fast"),),
        ),
        StrategyDef(
            "mean_reversion",
            MeanReversionParams.__doc__ or "",
            MeanReversionParams,
            _mean_reversion,
            above=(("overbought", "oversold"),),
        ),
        StrategyDef(
            "macd_trend",
            MacdTrendParams.__doc__ or "",
            MacdTrendParams,
            _macd_trend,
            above=(("slow", "fast"),),
        ),
        StrategyDef(
            "ml_ensemble",
            MlEnsembleParams.__doc__ or "",
            MlEnsembleParams,
            lambda bars, p: np.full_like(bars.close, np.nan),
            needs_signals=True,
        ),
    )
}


def get_strategy(name: str | StrategyDef) -> StrategyDef:
    """Return the strategy called ``name`` (KeyError naming the known ones otherwise)."""
    if isinstance(name, StrategyDef):
        return name
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


def build_targets(
    name: str | StrategyDef,
    params: dict[str, Any] | BaseModel | None,
    bars: Bars,
    signals: SignalProvider | None = None,
) -> np.ndarray:
    """Return the (n_bars, n_symbols) target matrix of strategy ``name`` on ``bars``."""
    strategy = get_strategy(name)
    p = strategy.parse(params)
    if strategy.needs_signals:
        if signals is None:
            raise ValueError(f"{strategy.name}: needs a signal provider")
        return signals.targets(bars)
    return strategy.build(bars, p)


def allows_short(params: BaseModel) -> bool:
    """Return whether the parameters let the strategy go short."""
    return bool(getattr(params, "allow_short", False))
