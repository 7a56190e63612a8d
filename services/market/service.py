"""Market-data domain logic: cache -> database -> provider, validation, indicators.

Never imports FastAPI: a CLI, a job or a test can call it directly. Every public method
returns one of the answer models of :mod:`services.market.schemas`.

Redis keys (under the configured prefix, each ending in ``:v<schema version>`` of its model):
``market:price:{symbol}`` (a hash: open, high, low, close, volume, timestamp and the JSON
answer), ``market:historical:{symbol}:{interval}:{start}:{end}:{adjusted}:{fill_gaps}``,
``indicators:{symbol}:{indicator}`` (latest value; ``indicator(k=v,...)`` for non-default
parameters) and ``indicators:{symbol}:{indicator(k=v,...),...}:{start}:{end}`` (series).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pandas as pd

from services.market import frames
from services.market import repository as repo
from services.market.bars import Loaded
from services.market.calendar import last_completed_session, market_status
from services.market.frames import Checked
from services.market.providers import ProviderChain
from services.market.schemas import (
    Answer,
    BulkFetchItem,
    BulkFetchResult,
    CacheLevel,
    HistoricalData,
    IndicatorSeries,
    LatestIndicator,
    MarketStatus,
    PriceQuote,
)
from services.market.validation import check_date_range, normalize_symbol, reject_bad_rows
from shared import quant
from shared.cache import Cache, ModelCache
from shared.db import Database
from shared.errors import AppError, NotFoundError, ValidationProblemError

log = logging.getLogger(__name__)

# Bars of the last days may still change (late prints, today's bar): never mark them covered.
RECENT_DAYS = 4
INTERVALS = ("1d", "1wk", "1mo")
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "timestamp")  # the seed's hash

A = TypeVar("A", bound=Answer)


def _today() -> date:
    return datetime.now(UTC).date()


def _missing_ranges(
    start: date, end: date, covered: list[tuple[date, date]]
) -> list[tuple[date, date]]:
    """Return the parts of start..end that no covered range contains."""
    missing: list[tuple[date, date]] = []
    cursor = start
    for lo, hi in covered:
        if hi < cursor:
            continue
        if lo > end:
            break
        if lo > cursor:
            missing.append((cursor, min(end, lo - timedelta(days=1))))
        cursor = max(cursor, hi + timedelta(days=1))
        if cursor > end:
            break
    if cursor <= end:
        missing.append((cursor, end))
    return missing


def _from_cache(answer: A, level: CacheLevel | None) -> A:
    """Return a copy of a cached answer that says it was cached and where (the entry is kept)."""
    return answer.model_copy(update={"cached": True, "cache_level": level})


def _param_label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _bars_before(day: date, bars: int) -> date:
    """Return a date at least `bars` trading sessions before day (calendar-day estimate)."""
    return day - timedelta(days=int(bars * 7 / 5 * 1.1) + 10)


class MarketService:
    """Prices, history and indicators with a three-level cache."""

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        providers: ProviderChain,
        price_ttl_s: int = 300,
        indicator_ttl_s: int = 60,
        historical_ttl_s: int = 86400,
        bulk_concurrency: int = 8,
    ) -> None:
        self.db = db
        self.cache = cache
        self.providers = providers
        self.price_ttl_s = price_ttl_s
        self.indicator_ttl_s = indicator_ttl_s
        self.historical_ttl_s = historical_ttl_s
        self.bulk_concurrency = bulk_concurrency
        self.prices = ModelCache(cache, PriceQuote, hash_fields=PRICE_FIELDS)
        self.histories = ModelCache(cache, HistoricalData)
        self.series = ModelCache(cache, IndicatorSeries)
        self.latest = ModelCache(cache, LatestIndicator)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ---------------------------------------------------------------- price
    async def get_price(self, raw_symbol: str) -> PriceQuote:
        """Return the latest price: cache, then a fresh-enough database row, then provider."""
        symbol = normalize_symbol(raw_symbol)
        key = f"market:price:{symbol}"
        cached, level = await self.prices.get(key)
        if cached is not None:
            return _from_cache(cached, level)
        async with self._locks[symbol]:
            async with self.db.session() as session:
                bars = await repo.latest_bars(session, symbol=symbol, n=2)
            fresh_day = last_completed_session()
            if not bars.empty and bars.index[-1].date() >= fresh_day:
                quote = self._quote(symbol, bars, "database", str(bars["source"].iloc[-1]))
            else:
                source, raw = await self.providers.fetch_latest(symbol)
                clean, rejected = reject_bad_rows(raw)
                if clean.empty:
                    raise NotFoundError(
                        f"No valid recent bar for {symbol}"
                        + (f" ({len(rejected)} rejected by validation)" if rejected else ""),
                        field="symbol",
                    )
                async with self.db.session() as session:
                    await repo.upsert_bars(session, symbol=symbol, frame=clean, source=source)
                    await session.commit()
                quote = self._quote(symbol, clean, "provider", source)
        await self.prices.set(key, quote, self.price_ttl_s)
        return quote

    @staticmethod
    def _quote(symbol: str, bars: pd.DataFrame, served_from: str, source: str) -> PriceQuote:
        last = bars.iloc[-1]
        prev = float(bars["close"].iloc[-2]) if len(bars) > 1 else None
        close = float(last["close"])
        change = close - prev if prev is not None else None
        return PriceQuote.model_validate(
            {
                "symbol": symbol,
                "price": close,
                "open": float(last["open"]),
                "high": float(last["high"]),
                "low": float(last["low"]),
                "close": close,
                "previous_close": prev,
                "change": change,
                "change_percent": (change / prev * 100.0) if change is not None and prev else None,
                "volume": int(last["volume"]),
                "timestamp": frames.iso(bars.index[-1]),
                "source": source,
                "cached": False,
                "cache_level": served_from,
            }
        )

    # ----------------------------------------------------------- historical
    async def resolve_window(
        self, symbol: str, start: date | None, end: date | None, default_days: int = 365
    ) -> tuple[date, date]:
        """Fill in a missing end (latest available bar) and start (default_days before end)."""
        today = _today()
        check_date_range(start, end, today=today)
        if end is None:
            latest = await self.get_price(symbol)
            end = latest.timestamp.date()
            if start is not None and start > end:
                end = min(today, start + timedelta(days=default_days))
        if start is None:
            start = end - timedelta(days=default_days)
        check_date_range(start, end, today=today)
        return start, end

    async def load(self, symbol: str, start: date, end: date) -> Loaded:
        """Return validated bars start..end from the database, fetching only missing ranges."""
        today = _today()
        fetch_end = min(end, today)
        sources: set[str] = set()
        rejected: list[dict[str, object]] = []
        served_from = "database"
        async with self._locks[symbol]:
            async with self.db.session() as session:
                covered = await repo.coverage(session, symbol=symbol)
            missing = _missing_ranges(start, fetch_end, covered) if start <= fetch_end else []
            # Fetch every missing piece first (no connection held while the vendor answers),
            # then write them in one transaction: a failed fetch stores nothing.
            fetched = []
            for lo, hi in missing:
                source, raw = await self.providers.fetch_history(symbol, lo, hi)
                clean, bad = reject_bad_rows(raw)
                rejected.extend(bad)
                fetched.append((lo, hi, source, clean, bad))
                sources.add(source)
                served_from = "provider"
            async with self.db.session() as session:
                for lo, hi, source, clean, bad in fetched:
                    await repo.upsert_bars(session, symbol=symbol, frame=clean, source=source)
                    stable_end = min(hi, today - timedelta(days=RECENT_DAYS))
                    if lo <= stable_end and not bad:
                        await repo.add_coverage(
                            session,
                            symbol=symbol,
                            start=lo,
                            end=stable_end,
                            source=source,
                            rows=len(clean),
                        )
                if fetched:
                    await session.commit()
                frame = await repo.load_bars(session, symbol=symbol, start=start, end=end)
        sources.update(str(s) for s in frame["source"].dropna().unique())
        return Loaded(frame.drop(columns="source"), served_from, sorted(sources), rejected)

    async def get_history(
        self,
        raw_symbol: str,
        *,
        start: date | None,
        end: date | None,
        interval: str = "1d",
        adjusted: bool = False,
        fill_gaps: bool = False,
    ) -> HistoricalData:
        """Return OHLCV bars with metadata and a data-quality report."""
        symbol = normalize_symbol(raw_symbol)
        if interval not in INTERVALS:
            raise ValidationProblemError(
                f"interval must be one of {', '.join(INTERVALS)}", field="interval"
            )
        start, end = await self.resolve_window(symbol, start, end)
        key = (
            f"market:historical:{symbol}:{interval}:{start}:{end}:{int(adjusted)}:{int(fill_gaps)}"
        )
        cached, level = await self.histories.get(key)
        if cached is not None:
            return cached.model_copy(update={"metadata": _from_cache(cached.metadata, level)})
        loaded = await self.load(symbol, start, end)
        if loaded.frame.empty and not await self._known(symbol):
            raise NotFoundError(f"Unknown symbol {symbol!r}", field="symbol")
        result = await asyncio.to_thread(
            frames.shape_history,
            symbol,
            loaded,
            start=start,
            end=end,
            interval=interval,
            adjusted=adjusted,
            fill_gaps=fill_gaps,
        )
        ttl = (
            self.historical_ttl_s
            if end < _today() - timedelta(days=RECENT_DAYS)
            else self.price_ttl_s
        )
        await self.histories.set(key, result, ttl)
        return result

    async def _known(self, symbol: str) -> bool:
        """Tell whether any provider knows the symbol (raises 404 through the chain if none)."""
        await self.get_price(symbol)
        return True

    # ----------------------------------------------------------- indicators
    async def get_indicators(
        self,
        raw_symbol: str,
        *,
        names: list[str],
        params: dict[str, dict[str, Any]],
        start: date | None,
        end: date | None,
    ) -> IndicatorSeries:
        """Return indicator series for a window, computed with enough earlier history."""
        symbol = normalize_symbol(raw_symbol)
        checked = self._check_indicators(names, params)
        start, end = await self.resolve_window(symbol, start, end)
        label = ",".join(f"{n}({_param_label(p)})" for n, p in checked.items())
        key = f"indicators:{symbol}:{label}:{start}:{end}"
        cached, level = await self.series.get(key)
        if cached is not None:
            return _from_cache(cached, level)
        warmup = max(quant.warmup_bars(n, p) for n, p in checked.items())
        loaded = await self.load(symbol, _bars_before(start, warmup), end)
        if loaded.frame.empty and not await self._known(symbol):
            raise NotFoundError(f"Unknown symbol {symbol!r}", field="symbol")
        result = await asyncio.to_thread(
            frames.indicator_series, symbol, loaded, checked, start=start, end=end
        )
        await self.series.set(key, result, self.indicator_ttl_s)
        return result

    async def latest_indicator(
        self, raw_symbol: str, name: str, params: dict[str, Any]
    ) -> LatestIndicator:
        """Return the latest value(s) of one indicator on the latest available bar."""
        symbol = normalize_symbol(raw_symbol)
        checked = self._check_indicators([name], {name: params})[name]
        defaults = {k: p.default for k, p in quant.INDICATORS[name].params.items()}
        suffix = "" if checked == defaults else f"({_param_label(checked)})"
        key = f"indicators:{symbol}:{name}{suffix}"
        cached, level = await self.latest.get(key)
        if cached is not None:
            return _from_cache(cached, level)
        quote = await self.get_price(symbol)
        end = quote.timestamp.date()
        start = _bars_before(end, quant.warmup_bars(name, checked) + 1)
        loaded = await self.load(symbol, start, end)
        result = await asyncio.to_thread(frames.latest_indicator, symbol, loaded, name, checked)
        await self.latest.set(key, result, self.indicator_ttl_s)
        async with self.db.session() as session:
            await repo.store_indicator_values(
                session,
                symbol=symbol,
                timestamp=result.timestamp.astimezone(UTC),
                values=dict(result.values),
                parameters={"indicator": name, **checked},
            )
            await session.commit()
        return result

    @staticmethod
    def _check_indicators(names: list[str], params: dict[str, dict[str, Any]]) -> Checked:
        if not names:
            raise ValidationProblemError("name at least one indicator", field="indicators")
        unknown = [n for n in names if n not in quant.INDICATORS]
        if unknown:
            raise ValidationProblemError(
                f"unknown indicator(s) {', '.join(unknown)}; available: "
                f"{', '.join(quant.INDICATORS)}",
                field="indicators",
            )
        checked: Checked = {}
        for name in dict.fromkeys(names):
            try:
                checked[name] = quant.validate_params(name, params.get(name, {}))
            except quant.IndicatorParamError as e:
                raise ValidationProblemError(str(e), field=e.field) from e
        return checked

    # ------------------------------------------------------ status and bulk
    async def market_status(self, at: datetime | None) -> MarketStatus:
        """Return NYSE status at an instant (default now)."""
        try:
            status = await asyncio.to_thread(market_status, at)
        except ValueError as e:
            raise ValidationProblemError(str(e), field="at") from e
        return MarketStatus.model_validate(status)

    async def bulk_fetch(
        self, symbols: list[str], *, kind: str, start: date | None, end: date | None
    ) -> BulkFetchResult:
        """Fetch many symbols concurrently; one symbol's failure never fails the others."""
        gate = asyncio.Semaphore(self.bulk_concurrency)

        async def one(raw: str) -> BulkFetchItem:
            async with gate:
                try:
                    if kind == "price":
                        return BulkFetchItem(symbol=raw, ok=True, price=await self.get_price(raw))
                    hist = await self.get_history(raw, start=start, end=end)
                    return BulkFetchItem(symbol=raw, ok=True, historical=hist)
                except AppError as e:
                    return BulkFetchItem(symbol=raw, ok=False, error=e.to_problem())

        results = list(await asyncio.gather(*(one(s) for s in symbols)))
        ok = sum(1 for r in results if r.ok)
        return BulkFetchResult(results=results, succeeded=ok, failed=len(results) - ok)
