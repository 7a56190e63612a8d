"""Frame shaping: loaded bars in, the market service's answer models out. No I/O.

Every function here is CPU work on pandas/numpy (quality checks, gap filling, adjustment,
resampling, indicators) and runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from services.market.bars import Loaded
from services.market.coverage import coverage_of, freshness
from services.market.schemas import HistoricalData, IndicatorSeries, LatestIndicator
from services.market.validation import fill_short_gaps, quality_of
from shared import quant

Checked = dict[str, dict[str, Any]]  # indicator name -> validated parameters


def iso(ts: pd.Timestamp) -> str:
    """Return a UTC timestamp as ISO 8601 with a `Z`."""
    return ts.isoformat().replace("+00:00", "Z")


def nan_to_none(values: np.ndarray) -> list[float | None]:
    """Return floats with NaN as None (JSON null)."""
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def resample(frame: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Aggregate daily bars to weekly or monthly bars labelled by their first trading day."""
    if interval == "1d" or frame.empty:
        return frame
    key = frame.index.tz_localize(None).to_period("W-SUN" if interval == "1wk" else "M")
    groups = frame.groupby(key, sort=True)
    out = pd.DataFrame(
        {
            "open": groups["open"].first(),
            "high": groups["high"].max(),
            "low": groups["low"].min(),
            "close": groups["close"].last(),
            "adj_close": groups["adj_close"].last(),
            "volume": groups["volume"].sum(),
        }
    )
    out.index = pd.DatetimeIndex(groups.apply(lambda g: g.index[0]).to_numpy()).rename("timestamp")
    if "filled" in frame:
        out["filled"] = groups["filled"].any().to_numpy()
    return out


def adjust(frame: pd.DataFrame) -> pd.DataFrame:
    """Scale open/high/low/close by adj_close/close (dividends and splits)."""
    if frame.empty:
        return frame
    ratio = (frame["adj_close"] / frame["close"]).fillna(1.0)
    out = frame.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = frame[col] * ratio
    return out


def bar_records(frame: pd.DataFrame, *, with_filled: bool) -> list[dict[str, Any]]:
    """Return bars as JSON-ready dicts (adj_close None where the vendor has none)."""
    stamps = [iso(ts) for ts in frame.index]
    cols = {
        c: frame[c].to_numpy("float64").tolist()
        for c in ("open", "high", "low", "close", "adj_close", "volume")
    }
    filled = frame["filled"].tolist() if with_filled and "filled" in frame else None
    bars = []
    for i, ts in enumerate(stamps):
        adj = cols["adj_close"][i]
        bar = {
            "timestamp": ts,
            "open": cols["open"][i],
            "high": cols["high"][i],
            "low": cols["low"][i],
            "close": cols["close"][i],
            "volume": int(cols["volume"][i]),
            "adj_close": None if math.isnan(adj) else adj,
        }
        if filled is not None:
            bar["filled"] = bool(filled[i])
        bars.append(bar)
    return bars


def shape_history(
    symbol: str,
    loaded: Loaded,
    *,
    start: date,
    end: date,
    interval: str,
    adjusted: bool,
    fill_gaps: bool,
    now: datetime,
) -> HistoricalData:
    """Check quality and coverage, optionally fill short gaps, adjust and resample; return
    the answer (loaded has at least one bar)."""
    report, missing = quality_of(symbol, loaded.frame, loaded.rejected)
    frame = loaded.frame
    coverage = coverage_of(symbol, _day(frame.index[0]), _day(frame.index[-1]), start, end, now)
    if fill_gaps:
        frame = fill_short_gaps(frame, missing, report.gaps)
        report.filled_rows = int(frame["filled"].sum())
    if adjusted:
        frame = adjust(frame)
    frame = resample(frame, interval)
    bars = bar_records(frame, with_filled=fill_gaps)
    return HistoricalData.model_validate(
        {
            "symbol": symbol,
            "interval": interval,
            "adjusted": adjusted,
            "start": start,
            "end": end,
            "bars": bars,
            "metadata": {
                "source": ",".join(loaded.sources) or None,
                "cached": False,
                "cache_level": loaded.served_from,
                "rows": len(bars),
                "quality": report.as_dict(),
            },
            "coverage": coverage.fields(),
            "notes": coverage.notes(symbol),
        }
    )


def _day(ts: pd.Timestamp) -> date:
    return pd.Timestamp(ts).date()


def compute_all(frame: pd.DataFrame, checked: Checked) -> dict[str, np.ndarray]:
    """Compute every output of the checked indicators on every bar, by flat column name."""
    high = frame["high"].to_numpy("float64")
    low = frame["low"].to_numpy("float64")
    close = frame["close"].to_numpy("float64")
    out: dict[str, np.ndarray] = {}
    for name, params in checked.items():
        for output, values in quant.compute(name, params, high=high, low=low, close=close).items():
            out[quant.column_name(name, output)] = values
    return out


def indicator_series(
    symbol: str, loaded: Loaded, checked: Checked, *, start: date, end: date, now: datetime
) -> IndicatorSeries:
    """Compute indicators on every loaded bar; answer the window from start on (it has at
    least one bar)."""
    frame = loaded.frame
    values = compute_all(frame, checked)
    in_window = frame.index >= pd.Timestamp(start, tz="UTC")
    shown = frame.index[in_window]
    coverage = coverage_of(symbol, _day(shown[0]), _day(shown[-1]), start, end, now)
    return IndicatorSeries.model_validate(
        {
            "symbol": symbol,
            "start": start,
            "end": end,
            "timestamps": [iso(ts) for ts in frame.index[in_window]],
            "values": {k: nan_to_none(v[in_window]) for k, v in values.items()},
            "parameters": checked,
            "warmup_bars_used": int((~in_window).sum()),
            "source": ",".join(loaded.sources) or None,
            "cached": False,
            "cache_level": loaded.served_from,
            "coverage": coverage.fields(),
            "notes": coverage.notes(symbol),
            **freshness(symbol, coverage.last_bar, now, until=end).fields(),
        }
    )


def latest_indicator(
    symbol: str, loaded: Loaded, name: str, params: dict[str, Any], now: datetime
) -> LatestIndicator:
    """Compute one indicator on the loaded bars; answer its value(s) on the last bar."""
    frame = loaded.frame
    values = compute_all(frame, {name: params})
    return LatestIndicator.model_validate(
        {
            "symbol": symbol,
            "indicator": name,
            "parameters": params,
            "timestamp": iso(frame.index[-1]),
            "values": {k: (None if math.isnan(v[-1]) else float(v[-1])) for k, v in values.items()},
            "source": ",".join(loaded.sources) or None,
            "cached": False,
            "cache_level": loaded.served_from,
            **freshness(symbol, _day(frame.index[-1]), now).fields(),
        }
    )
