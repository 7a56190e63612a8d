"""Model features per bar for a window (`GET /features/{symbol}`): the answer and its logic.

The 50 features of :mod:`shared.quant.features`, each a function of the bars up to and
including its own (past data only). A window is computed with ``WARMUP`` earlier bars loaded
first and dropped from the answer, so its values equal those of the full history (to the
registry's tolerance); rows whose feature has no value yet are ``null``. The answer is
columnar like ``/indicators``, with the bars' closes beside the features (labels need them).

Cached like indicator series (L1, then Redis) under ``features:{symbol}:{start}:{end}``:
``HISTORICAL_TTL`` for windows that end before the last few days, the indicator TTL otherwise.
"""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import Field

from services.market.bars import Loaded
from services.market.frames import iso, nan_to_none
from services.market.schemas import CACHE_LEVEL_DOC, Answer, CacheLevel
from services.market.service import MarketService
from services.market.validation import normalize_symbol
from shared.cache import ModelCache
from shared.quant.features import FEATURES, WARMUP, compute_features

# Bars of the last days may still change (late prints): such windows are cached briefly.
RECENT_DAYS = 4

FEATURES_TABLE = "\n".join(f"- `{name}`: {spec.description}" for name, spec in FEATURES.items())


class FeatureSeries(Answer):
    """Model features of every bar in a window, columnar: `timestamps[i]` goes with
    `close[i]` and `values[name][i]`."""

    symbol: str
    start: date
    end: date
    timestamps: list[datetime] = Field(description="Bar dates in the window, UTC, oldest first.")
    close: list[float] = Field(description="Close of each bar (unadjusted, like the features).")
    values: dict[str, list[float | None]] = Field(
        description="One array per feature, in the registry's column order: "
        + ", ".join(f"`{name}`" for name in FEATURES)
        + ". `null` where a feature's window is not yet full (warm-up at the start of the "
        "symbol's history). Each feature is described in the operation's description."
    )
    warmup_bars_used: int = Field(
        description="Bars before `start` used so values equal those on the full history."
    )
    source: str | None = Field(default=None, description="Data vendor(s) of the bars.")
    cached: bool = Field(description="True when served from L1 or L2 cache.")
    cache_level: CacheLevel = Field(description=CACHE_LEVEL_DOC)


FEATURES_DOC = (
    textwrap.fill(
        "Return the 50 model features of every bar between `start` and `end`, columnar, with "
        "each bar's close. Every feature at bar t is computed from bars up to and including t "
        "only (no look-ahead); earlier bars are used for warm-up, so values equal those "
        "computed on the full history; `null` where a feature has no value yet. All but "
        "`log_volume` are free of the price scale, so several symbols can feed one model. "
        "Prices are unadjusted (split-adjusted vendor closes). The features:",
        width=88,
    )
    + "\n\n"
    + FEATURES_TABLE
)


def calendar_days_for(bars: int) -> int:
    """Return calendar days that hold at least `bars` trading sessions (a safe estimate)."""
    return int(bars * 7 / 5 * 1.1) + 10


def feature_series(symbol: str, loaded: Loaded, *, start: date, end: date) -> FeatureSeries:
    """Compute the features on every loaded bar; answer the window from start on (CPU work)."""
    frame = loaded.frame
    if frame.empty:
        columns: dict[str, list[float | None]] = {name: [] for name in FEATURES}
        stamps: list[str] = []
        closes: list[float] = []
        warmup = 0
    else:
        names, matrix = compute_features(
            frame["open"].to_numpy("float64"),
            frame["high"].to_numpy("float64"),
            frame["low"].to_numpy("float64"),
            frame["close"].to_numpy("float64"),
            frame["volume"].to_numpy("float64"),
            frame.index.tz_localize(None) if frame.index.tz is not None else frame.index,
        )
        in_window = np.asarray(frame.index >= pd.Timestamp(start, tz="UTC"))
        part = matrix[in_window]
        columns = {name: nan_to_none(part[:, j]) for j, name in enumerate(names)}
        stamps = [iso(ts) for ts in frame.index[in_window]]
        closes = frame["close"].to_numpy("float64")[in_window].tolist()
        warmup = int((~in_window).sum())
    return FeatureSeries.model_validate(
        {
            "symbol": symbol,
            "start": start,
            "end": end,
            "timestamps": stamps,
            "close": closes,
            "values": columns,
            "warmup_bars_used": warmup,
            "source": ",".join(loaded.sources) or None,
            "cached": False,
            "cache_level": loaded.served_from,
        }
    )


class FeatureService:
    """Features of a window on top of the market service's bar loading and cache."""

    def __init__(self, market: MarketService) -> None:
        self.market = market
        self.answers = ModelCache(market.cache, FeatureSeries)

    async def get_features(
        self, raw_symbol: str, *, start: date | None, end: date | None
    ) -> FeatureSeries:
        """Return the features of every bar start..end (default: the year to the last bar)."""
        symbol = normalize_symbol(raw_symbol)
        start, end = await self.market.resolve_window(symbol, start, end)
        key = f"features:{symbol}:{start}:{end}"
        today = datetime.now(UTC).date()
        settled = end < today - timedelta(days=RECENT_DAYS)
        ttl = self.market.historical_ttl_s if settled else self.market.indicator_ttl_s

        async def compute() -> FeatureSeries:
            assert start is not None and end is not None
            first = start - timedelta(days=calendar_days_for(WARMUP))
            loaded = await self.market.load(symbol, first, end)
            if loaded.frame.empty:
                await self.market.get_price(symbol)  # an unknown symbol answers 404 here
            return await asyncio.to_thread(feature_series, symbol, loaded, start=start, end=end)

        answer, level = await self.answers.get_or_compute(key, compute, ttl)
        if level is None:
            return answer
        return answer.model_copy(update={"cached": True, "cache_level": level})
