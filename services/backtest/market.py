"""Bars from the market service, over its HTTP contract (`GET /historical/{symbol}`).

The backtest service never imports market code: `shared.peers.peer_client(settings, "market")`
calls MARKET_URL when set, else the co-hosted market app in-process, else the `trading serve`
layout. Market problems become problems that name this service's fields (`symbol`,
`symbols[1]`, `start_date`, `data_frequency`) through `shared.peers.ask`. Loaded windows stay
in an in-process cache for a few minutes, so a warm request does not move the same bars twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import quote

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from services.backtest.engine.runner import Bars
from shared.cache import LRUCache
from shared.errors import NoDataError, UpstreamUnavailableError, ValidationProblemError
from shared.http import ServiceClient
from shared.peers import FieldMap, ask

# The market's query names -> this service's request fields.
FIELD_NAMES = {"start": "start_date", "end": "end_date", "interval": "data_frequency"}


class _Bar(BaseModel):
    """One bar of a market `/historical` answer (the fields a backtest reads)."""

    model_config = ConfigDict(extra="ignore")

    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None


class _History(BaseModel):
    """The part of a market `/historical` answer a backtest reads."""

    model_config = ConfigDict(extra="ignore")

    symbol: str
    bars: list[_Bar]
    notes: list[str] = []  # the market's coverage notes (an end of the range not reached)


@dataclass(frozen=True)
class LoadedBars:
    """Aligned bars of one or more instruments and the SHA-256 of exactly these bars."""

    bars: Bars
    bars_hash: str
    notes: tuple[str, ...] = ()  # the market's coverage notes, per instrument

    @property
    def dates(self) -> list[date]:
        """Return the bar dates."""
        return [pd.Timestamp(t).date() for t in self.bars.index]


def bars_digest(bars: Bars, *, interval: str, adjusted: bool) -> str:
    """Return the SHA-256 of the bars (symbols, dates, OHLC) and how they were asked for."""
    h = hashlib.sha256()
    h.update(f"{','.join(bars.symbols)}|{interval}|{int(adjusted)}|".encode())
    h.update(np.ascontiguousarray(bars.index.astype("datetime64[ns]").view(np.int64)).tobytes())
    for a in (bars.open, bars.high, bars.low, bars.close):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def market_fields(symbol_field: str) -> FieldMap:
    """Return this service's names of the fields a market problem about one symbol blames."""
    return FieldMap(default=symbol_field, names={"symbol": symbol_field, **FIELD_NAMES})


def _frame(history: _History) -> pd.DataFrame:
    """Return the bars as an OHLC frame indexed by naive UTC timestamps (the market's coverage
    notes in its `attrs["notes"]`)."""
    index = pd.DatetimeIndex([b.timestamp for b in history.bars])
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    frame = pd.DataFrame(
        {
            "open": [b.open for b in history.bars],
            "high": [b.high for b in history.bars],
            "low": [b.low for b in history.bars],
            "close": [b.close for b in history.bars],
            "volume": [np.nan if b.volume is None else b.volume for b in history.bars],
        },
        index=index,
    )
    frame.attrs["notes"] = list(history.notes)
    return frame


class MarketBars:
    """Load aligned bars from the market service (cached in-process for `ttl_s`)."""

    def __init__(self, client: ServiceClient, *, ttl_s: float, cache_size: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cache = LRUCache(maxsize=cache_size, max_bytes=512 * 2**20)
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def frame(
        self,
        symbol: str,
        start: date,
        end: date,
        *,
        interval: str,
        adjusted: bool,
        symbol_field: str = "symbol",
    ) -> pd.DataFrame:
        """Return one instrument's bars start..end as an OHLC frame (cached)."""
        key = f"{symbol}|{start}|{end}|{interval}|{int(adjusted)}"
        hit = self._cache.get(key)
        if isinstance(hit, pd.DataFrame):
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if isinstance(hit, pd.DataFrame):
                return hit
            params = {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "interval": interval,
                "adjusted": str(adjusted).lower(),
            }
            response = await ask(
                self.client,
                "GET",
                f"/historical/{quote(symbol, safe='')}",
                about=symbol,
                fields=market_fields(symbol_field),
                no_data=(NoDataError, "start_date"),
                params=params,
            )
            try:
                history = await asyncio.to_thread(_History.model_validate_json, response.content)
            except ValidationError as e:
                raise UpstreamUnavailableError(
                    f"The market service answered /historical/{symbol} with something that is "
                    f"not a history ({e.error_count()} errors)."
                ) from e
            frame = await asyncio.to_thread(_frame, history)
            if self.ttl_s > 0:
                self._cache.set(key, frame, self.ttl_s, size=frame.memory_usage().sum())
        self._locks.pop(key, None)
        return frame

    async def load(
        self,
        symbols: list[str],
        start: date,
        end: date,
        *,
        interval: str,
        adjusted: bool,
        symbols_field: str | None = None,
    ) -> LoadedBars:
        """Return the instruments' bars start..end on the dates they all have, and their hash.

        symbols_field names the request field for errors (`symbols` gives `symbols[1]`; None
        means the single `symbol`).
        """
        key = f"{','.join(symbols)}|{start}|{end}|{interval}|{int(adjusted)}|aligned"
        hit = self._cache.get(key)
        if isinstance(hit, LoadedBars):
            return hit
        fields = [
            f"{symbols_field}[{i}]" if symbols_field else "symbol" for i in range(len(symbols))
        ]
        frames: list[pd.DataFrame] = await asyncio.gather(
            *(
                self.frame(s, start, end, interval=interval, adjusted=adjusted, symbol_field=f)
                for s, f in zip(symbols, fields, strict=True)
            )
        )
        for s, frame, f in zip(symbols, frames, fields, strict=True):
            if len(frame) < 2:
                raise ValidationProblemError(
                    f"{s} has {len(frame)} {interval} bar(s) between {start} and {end}; a "
                    "backtest needs at least two. Widen the dates.",
                    field="start_date" if len(symbols) == 1 else f,
                )
        try:
            bars = Bars.from_frames(dict(zip(symbols, frames, strict=True)))
        except ValueError as e:
            raise ValidationProblemError(
                f"The instruments share too few dates between {start} and {end} ({e}).",
                field=symbols_field or "symbol",
            ) from e
        digest = await asyncio.to_thread(bars_digest, bars, interval=interval, adjusted=adjusted)
        notes = tuple(n for frame in frames for n in frame.attrs.get("notes", ()))
        loaded = LoadedBars(bars=bars, bars_hash=digest, notes=notes)
        if self.ttl_s > 0:
            self._cache.set(key, loaded, self.ttl_s, size=bars.close.nbytes * 5)
        return loaded
