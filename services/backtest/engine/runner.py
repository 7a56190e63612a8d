"""Thin Python wrappers around the kernels: validate, cast, allocate, call, name the results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from services.backtest.engine import core
from services.backtest.engine.core import SimSpec
from shared.quant.sizing import SIZE_METHODS, SIZE_VOLATILITY_TARGET

REASONS = ("signal", "stop_loss", "take_profit", "end", "liquidation", "margin_call")
FILL_COLUMNS = (
    "bar",
    "symbol",
    "direction",
    "shares",
    "price",
    "commission",
    "slippage_cost",
    "total_cost",
    "pnl",
    "portfolio_value",
    "reason",
    "trade_return",
)


def _matrix(name: str, values: np.ndarray) -> np.ndarray:
    """Return ``values`` as a C-contiguous float64 (n, m) matrix, or raise ValueError."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 1-D or 2-D array, got {a.ndim}-D")
    return np.ascontiguousarray(a)


@dataclass(frozen=True)
class Bars:
    """Aligned OHLC matrices ``(n_bars, n_symbols)`` with their dates and symbol names."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="datetime64[ns]"))
    symbols: tuple[str, ...] = ()
    volume: np.ndarray | None = None  # (n_bars, n_symbols), when the source has it

    def __post_init__(self) -> None:
        shape = None
        for name in ("open", "high", "low", "close"):
            a = _matrix(name, getattr(self, name))
            object.__setattr__(self, name, a)
            if shape is not None and a.shape != shape:
                raise ValueError(f"{name}: shape {a.shape} differs from {shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name}: bars must be finite (align the symbols first)")
            if (a <= 0.0).any():
                raise ValueError(f"{name}: prices must be positive")
            shape = a.shape
        assert shape is not None
        if shape[0] < 2:
            raise ValueError("bars: at least two bars are needed")
        if not self.symbols:
            object.__setattr__(self, "symbols", tuple(f"S{j}" for j in range(shape[1])))
        if len(self.symbols) != shape[1]:
            raise ValueError("symbols: one name per column")
        if len(self.index) and len(self.index) != shape[0]:
            raise ValueError("index: one timestamp per bar")
        if self.volume is not None:
            v = _matrix("volume", self.volume)
            if v.shape != shape:
                raise ValueError(f"volume: shape {v.shape} differs from {shape}")
            object.__setattr__(self, "volume", v)

    @property
    def n_bars(self) -> int:
        """Return the number of bars."""
        return int(self.close.shape[0])

    @property
    def n_symbols(self) -> int:
        """Return the number of symbols."""
        return int(self.close.shape[1])

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame]) -> Bars:
        """Build aligned bars from one OHLC frame per symbol, on the dates all of them share."""
        if not frames:
            raise ValueError("frames: at least one symbol is needed")
        cols = {}
        for sym, df in frames.items():
            lower = df.rename(columns=str.lower)
            missing = {"open", "high", "low", "close"} - set(lower.columns)
            if missing:
                raise ValueError(f"{sym}: missing columns {sorted(missing)}")
            cols[sym] = lower
        common = None
        for df in cols.values():
            common = df.index if common is None else common.intersection(df.index)
        assert common is not None
        common = common.sort_values()
        mats = {
            c: np.column_stack([cols[s].loc[common, c].to_numpy(np.float64) for s in cols])
            for c in ("open", "high", "low", "close")
        }
        if all("volume" in df.columns for df in cols.values()):
            mats["volume"] = np.column_stack(
                [cols[s].loc[common, "volume"].to_numpy(np.float64) for s in cols]
            )
        return cls(
            index=pd.DatetimeIndex(common).to_numpy(dtype="datetime64[ns]"),
            symbols=tuple(cols),
            **mats,
        )


def make_spec(
    *,
    initial_capital: float,
    commission: float = 0.0,
    commission_rate: float = 0.0,
    min_commission: float = 0.0,
    slippage: float = 0.0,
    size_method: str = "all_in",
    size_value: float = 1.0,
    fractional: bool = False,
    allow_short: bool = False,
    max_positions: int = 1,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    fill: str = "next_open",
    warmup: int = 0,
    periods_per_year: float = 252.0,
    final_at_open: bool = False,
) -> SimSpec:
    """Return a kernel spec from plain settings, checked (ValueError names the setting)."""
    checks = {
        "initial_capital": initial_capital > 0,
        "commission": commission >= 0,
        "commission_rate": 0 <= commission_rate < 1,
        "min_commission": min_commission >= 0,
        "slippage": 0 <= slippage < 1,
        "size_method": size_method in SIZE_METHODS,
        "size_value": size_value > 0 and math.isfinite(size_value),
        "max_positions": max_positions >= 1,
        "stop_loss": stop_loss is None or 0 < stop_loss < 1,
        "take_profit": take_profit is None or take_profit > 0,
        "fill": fill in ("next_open", "close"),
        "warmup": warmup >= 0,
        "periods_per_year": periods_per_year > 0,
    }
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"{name}: invalid value")
    values: dict[str, object] = dict(
        initial_capital=float(initial_capital),
        commission=float(commission),
        commission_rate=float(commission_rate),
        min_commission=float(min_commission),
        slippage=float(slippage),
        size_method=SIZE_METHODS[size_method],
        size_value=float(size_value),
        fractional=bool(fractional),
        allow_short=bool(allow_short),
        max_positions=int(max_positions),
        stop_loss=float("nan") if stop_loss is None else float(stop_loss),
        take_profit=float("nan") if take_profit is None else float(take_profit),
        fill_on_close=fill == "close",
        warmup=int(warmup),
        periods_per_year=float(periods_per_year),
        final_at_open=bool(final_at_open),
    )
    return core.spec_from_fields(values)


@dataclass(frozen=True)
class SimulationResult:
    """What one simulation produced: per-bar arrays, the fill log and the counters."""

    equity: np.ndarray  # (n,)
    cash: np.ndarray  # (n,)
    positions: np.ndarray  # (n, m) signed shares at each bar's close
    fills: np.ndarray  # (k, 12), columns FILL_COLUMNS
    counters: np.ndarray  # (8,), core.CNT_*
    initial_capital: float

    @property
    def n_rejected(self) -> int:
        """Return how many opening orders were rejected (unaffordable or over max_positions)."""
        return int(self.counters[core.CNT_REJECTED])

    @property
    def n_resized(self) -> int:
        """Return how many opening orders were cut to what the cash could pay for."""
        return int(self.counters[core.CNT_RESIZED])

    @property
    def n_trades(self) -> int:
        """Return the number of closed round trips."""
        return int(self.counters[core.CNT_TRADES])

    @property
    def final_capital(self) -> float:
        """Return the equity after the last bar (everything closed)."""
        return float(self.equity[-1])

    @property
    def returns(self) -> np.ndarray:
        """Return per-bar simple returns, the first against the initial capital."""
        prev = np.concatenate(([self.initial_capital], self.equity[:-1]))
        # a wiped-out account (equity 0) earns 0 from then on
        return np.divide(self.equity, prev, out=np.ones_like(prev), where=prev > 0) - 1.0

    @property
    def trade_pnls(self) -> np.ndarray:
        """Return the realised pnl of every closed round trip, in closing order."""
        closing = ~np.isnan(self.fills[:, core.LOG_PNL])
        return self.fills[closing, core.LOG_PNL]

    @property
    def trade_returns(self) -> np.ndarray:
        """Return every round trip's pnl as a fraction of the equity when it opened."""
        closing = ~np.isnan(self.fills[:, core.LOG_PNL])
        return self.fills[closing, core.LOG_TRADE_RETURN]

    @property
    def exposure(self) -> float:
        """Return the fraction of bars that end with at least one open position."""
        return float(self.counters[core.CNT_EXPOSED] / self.equity.shape[0])

    def fills_frame(self, bars: Bars | None = None) -> pd.DataFrame:
        """Return the fill log as a frame (timestamps and symbols when ``bars`` is given)."""
        df = pd.DataFrame(self.fills, columns=list(FILL_COLUMNS))
        for c in ("bar", "symbol"):
            df[c] = df[c].astype(np.int64)
        df["direction"] = np.where(df["direction"] > 0, "buy", "sell")
        df["reason"] = [REASONS[int(r)] for r in df["reason"]]
        if bars is not None:
            if len(bars.index):
                df.insert(0, "timestamp", bars.index[df["bar"].to_numpy()])
            df["symbol"] = [bars.symbols[j] for j in df["symbol"]]
        return df


def simulate(
    bars: Bars,
    target: np.ndarray,
    spec: SimSpec,
    atr: np.ndarray | None = None,
) -> SimulationResult:
    """Run one simulation of ``target`` (n, m) on ``bars`` and return its full record."""
    tgt = _matrix("target", target)
    if tgt.shape != bars.close.shape:
        raise ValueError(f"target: shape {tgt.shape} differs from the bars' {bars.close.shape}")
    if atr is None:
        if spec.size_method == SIZE_VOLATILITY_TARGET:
            raise ValueError("atr: volatility_target sizing needs an ATR matrix")
        atr_m = np.full_like(bars.close, np.nan)
    else:
        atr_m = _matrix("atr", atr)
        if atr_m.shape != bars.close.shape:
            raise ValueError("atr: shape differs from the bars'")
    n, m = bars.close.shape
    equity = np.empty(n)
    cash = np.empty(n)
    positions = np.empty((n, m))
    fills, counters = core.simulate_nb(
        bars.open,
        bars.high,
        bars.low,
        bars.close,
        tgt,
        atr_m,
        spec,
        True,
        equity,
        cash,
        positions,
    )
    return SimulationResult(
        equity=equity,
        cash=cash,
        positions=positions,
        fills=fills,
        counters=counters,
        initial_capital=spec.initial_capital,
    )


def stack_targets(targets: Sequence[np.ndarray]) -> np.ndarray:
    """Return per-symbol target vectors as one (n, m) matrix."""
    return np.column_stack([np.asarray(t, dtype=np.float64) for t in targets])
