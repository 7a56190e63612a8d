"""Market-data domain logic: cache -> database -> provider, validation, indicators.

Never imports FastAPI: a CLI, a job or a test can call it directly. Every public method
returns one of the answer models of :mod:`services.market.schemas`.

Redis keys (under the configured prefix, each ending in ``:v<schema version>`` of its model):
``market:price:{symbol}`` (a hash: open, high, low, close, volume, timestamp and the JSON
answer), ``market:historical:{symbol}:{interval}:{start}:{end}:{adjusted}:{fill_gaps}``,
``indicators:{symbol}:{indicator}`` (latest value; ``indicator(k=v,...)`` for non-default
parameters) and ``indicators:{symbol}:{indicator(k=v,...),...}:{start}:{end}`` (series).

Every answer is read through ``ModelCache.get_or_compute``: one computation per key at a
time, and an expired entry served for ``stale_s`` more while one request refreshes it. A
price may be served stale only while its exchange is closed (its bar cannot change then);
while the exchange is open the quote comes from the provider, is refreshed ahead of expiry,
and is never older than ``price_ttl_s``. A bar of a session still trading is never stored
(:func:`services.market.calendar.last_final_day`): the database holds final bars only.
"Now" comes from ``clock`` (a settable callable returning an aware datetime).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pandas as pd

from services.market import frames
from services.market import repository as repo
from services.market.bars import Loaded
from services.market.calendar import is_trading, last_final_day, market_status
from services.market.coverage import freshness, no_data
from services.market.frames import Checked
from services.market.providers import ProviderChain, deadline
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
    SymbolInfo,
    SymbolList,
)
from services.market.validation import check_date_range, normalize_symbol, reject_bad_rows
from shared import quant
from shared.cache import Cache, ModelCache
from shared.db import Database
from shared.errors import (
    AppError,
    DatabaseUnavailableError,
    NotFoundError,
    ValidationProblemError,
)

log = logging.getLogger(__name__)

# Bars of the last days may still change (late prints, today's bar): never mark them covered.
RECENT_DAYS = 4
INTERVALS = ("1d", "1wk", "1mo")
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "timestamp")  # the seed's hash
# While the exchange is open, a price is refreshed in the background once this fraction of
# its TTL is left, so callers are not kept waiting at its expiry (even when a refresh is
# slow because the process is saturated).
PRICE_EARLY_FRACTION = 0.5

A = TypeVar("A", bound=Answer)


def utc_now() -> datetime:
    """Return the current time, UTC (the service's default clock)."""
    return datetime.now(UTC)


def final_bars(frame: pd.DataFrame, symbol: str, now: datetime) -> pd.DataFrame:
    """Return the rows of frame whose session is over at now (the bars that may be stored)."""
    if frame.empty:
        return frame
    last = pd.Timestamp(last_final_day(symbol, now), tz="UTC")
    return frame.loc[frame.index <= last]


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
        stale_s: float = 300.0,
        request_deadline_s: float | None = 10.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.cache = cache
        self.providers = providers
        self.price_ttl_s = price_ttl_s
        self.indicator_ttl_s = indicator_ttl_s
        self.historical_ttl_s = historical_ttl_s
        self.bulk_concurrency = bulk_concurrency
        self.stale_s = stale_s
        self.request_deadline_s = request_deadline_s
        self.clock = clock
        self.prices = ModelCache(cache, PriceQuote, hash_fields=PRICE_FIELDS)
        self.histories = ModelCache(cache, HistoricalData)
        self.series = ModelCache(cache, IndicatorSeries)
        self.latest = ModelCache(cache, LatestIndicator)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Symbols whose cached quote was taken while their session traded (an unfinished bar).
        self._unfinished: set[str] = set()

    def today(self) -> date:
        """Return today's date (UTC) on the service's clock."""
        return self.clock().astimezone(UTC).date()

    # ---------------------------------------------------------------- price
    async def get_price(self, raw_symbol: str) -> PriceQuote:
        """Return the latest price: the provider while the exchange trades, else cache,
        database (a final bar of the last session), provider."""
        symbol = normalize_symbol(raw_symbol)
        key = f"market:price:{symbol}"
        if is_trading(symbol, self.clock()):  # the bar moves: never older than the TTL
            stale_s, early_s = 0.0, self.price_ttl_s * PRICE_EARLY_FRACTION
        elif symbol in self._unfinished:  # cached during the session: the close differs
            stale_s, early_s = 0.0, 0.0
        else:  # the last bar is final: an old answer is still the right one
            stale_s, early_s = self.stale_s, 0.0
        with deadline(self.request_deadline_s):
            quote, level = await self.prices.get_or_compute(
                key,
                lambda: self._fetch_price(symbol, key, early_s),
                self.price_ttl_s,
                stale_s=stale_s,
                early_s=early_s,
                keep_s=self.stale_s,  # for _latest_day, whatever the market does
            )
        return _from_cache(quote, level) if level is not None else quote

    async def _latest_day(self, symbol: str) -> date:
        """Return the date of symbol's latest bar (a window's default end).

        A cached quote, even expired, answers while it is not behind the last final
        session: only final bars are stored, so its date is still the right end, and history
        and indicators never wait for a price refresh.
        """
        quote = self.prices.peek_any(f"market:price:{symbol}")
        if quote is not None:
            day = quote.timestamp.date()
            if day >= last_final_day(symbol, self.clock()):
                return day
        return (await self.get_price(symbol)).timestamp.date()

    @asynccontextmanager
    async def _exclusive(self, symbol: str) -> AsyncIterator[None]:
        """Hold symbol's lock so one request at a time fetches it; wait at most the
        database bound, then go ahead without it (stored bars are upserted, so a duplicate
        fetch is wasted work, never wrong data)."""
        lock = self._locks[symbol]
        try:
            async with asyncio.timeout(self.db.bound_s):
                await lock.acquire()
        except TimeoutError:
            log.info(
                "%s: fetching without its lock (held longer than %g s)", symbol, self.db.bound_s
            )
            yield
            return
        try:
            yield
        finally:
            lock.release()

    async def _fetch_price(self, symbol: str, key: str, early_s: float) -> PriceQuote:
        async with self._exclusive(symbol):
            # Another request may have stored it while this one waited for the lock.
            again = self.prices.peek_live(key, min_ttl_s=early_s)
            if again is not None:
                return again
            now = self.clock()
            if not is_trading(symbol, now):
                try:
                    async with self.db.session() as session:
                        bars = await repo.latest_bars(session, symbol=symbol, n=2)
                except DatabaseUnavailableError as e:  # the provider still knows the price
                    log.warning("stored bars of %s unreadable, asking the provider: %s", symbol, e)
                    bars = None
                final_day = last_final_day(symbol, now)
                if bars is not None and not bars.empty and bars.index[-1].date() >= final_day:
                    self._unfinished.discard(symbol)
                    source = str(bars["source"].iloc[-1])
                    return self._quote(symbol, bars, "database", source, now)
            fetched = await self.providers.fetch_latest(symbol)
            clean, rejected = reject_bad_rows(fetched.frame)
            if clean.empty:
                raise NotFoundError(
                    f"No valid recent bar for {symbol}"
                    + (f" ({len(rejected)} rejected by validation)" if rejected else ""),
                    field="symbol",
                )
            await self._store_final(symbol, final_bars(clean, symbol, now), fetched.source)
            if clean.index[-1].date() > last_final_day(symbol, now):
                self._unfinished.add(symbol)
            else:
                self._unfinished.discard(symbol)
            return self._quote(symbol, clean, "provider", fetched.label, now)

    async def _store_final(self, symbol: str, bars: pd.DataFrame, source: str) -> None:
        """Store final bars that came with a quote; the quote stands if the database is down."""
        if bars.empty:
            return
        try:
            async with self.db.session() as session:
                await repo.upsert_bars(session, symbol=symbol, frame=bars, source=source)
                await session.commit()
        except DatabaseUnavailableError as e:
            log.warning("bars of %s not stored (answered from the provider): %s", symbol, e)

    @staticmethod
    def _quote(
        symbol: str, bars: pd.DataFrame, served_from: str, source: str, now: datetime
    ) -> PriceQuote:
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
                **freshness(symbol, bars.index[-1].date(), now).fields(),
            }
        )

    # ----------------------------------------------------------- historical
    async def resolve_window(
        self, symbol: str, start: date | None, end: date | None, default_days: int = 365
    ) -> tuple[date, date]:
        """Fill in a missing end (latest available bar) and start (default_days before end)."""
        today = self.today()
        check_date_range(start, end, today=today)
        if end is None:
            end = await self._latest_day(symbol)
            if start is not None and start > end:
                end = min(today, start + timedelta(days=default_days))
        if start is None:
            start = end - timedelta(days=default_days)
        check_date_range(start, end, today=today)
        return start, end

    async def load(self, symbol: str, start: date, end: date) -> Loaded:
        """Return validated final bars start..end from the database, fetching only missing
        ranges; a bar of a session still trading is neither stored nor returned."""
        now = self.clock()
        today = now.astimezone(UTC).date()
        fetch_end = min(end, today)
        sources: set[str] = set()
        rejected: list[dict[str, object]] = []
        served_from = "database"
        async with self.db.session() as session:
            covered = await repo.coverage(session, symbol=symbol)
        missing = _missing_ranges(start, fetch_end, covered) if start <= fetch_end else []
        if missing:  # one fetch per symbol at a time; the others find it stored
            async with self._exclusive(symbol):
                async with self.db.session() as session:
                    covered = await repo.coverage(session, symbol=symbol)
                missing = _missing_ranges(start, fetch_end, covered)
                # Fetch every missing piece first (no connection held while the vendor
                # answers), then write them in one transaction: a failed fetch stores nothing.
                fetched = []
                for lo, hi in missing:
                    got = await self.providers.fetch_history(symbol, lo, hi)
                    clean, bad = reject_bad_rows(got.frame)
                    rejected.extend(bad)
                    fetched.append((lo, hi, got.source, final_bars(clean, symbol, now), bad))
                    sources.update(got.label.split(","))
                    served_from = "provider"
                if fetched:
                    async with self.db.session() as session:
                        for lo, hi, source, clean, bad in fetched:
                            await repo.upsert_bars(
                                session, symbol=symbol, frame=clean, source=source
                            )
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
                        await session.commit()
        async with self.db.session() as session:
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
        with deadline(self.request_deadline_s):
            start, end = await self.resolve_window(symbol, start, end)
            key = (
                f"market:historical:{symbol}:{interval}:{start}:{end}:{int(adjusted)}"
                f":{int(fill_gaps)}"
            )
            old = end < self.today() - timedelta(days=RECENT_DAYS)
            result, level = await self.histories.get_or_compute(
                key,
                lambda: self._history(symbol, start, end, interval, adjusted, fill_gaps),
                self.historical_ttl_s if old else self.price_ttl_s,
                stale_s=self.stale_s,
            )
        if level is None:
            return result
        return result.model_copy(update={"metadata": _from_cache(result.metadata, level)})

    async def _history(
        self, symbol: str, start: date, end: date, interval: str, adjusted: bool, fill_gaps: bool
    ) -> HistoricalData:
        loaded = await self.load(symbol, start, end)
        if loaded.frame.empty:
            await self._known(symbol)  # an unknown symbol is a 404 symbol_not_found
            raise no_data(symbol, start, end, await self.span(symbol))
        return await asyncio.to_thread(
            frames.shape_history,
            symbol,
            loaded,
            start=start,
            end=end,
            interval=interval,
            adjusted=adjusted,
            fill_gaps=fill_gaps,
            now=self.clock(),
        )

    async def span(self, symbol: str) -> tuple[date, date] | None:
        """Return the first and last bar dates of symbol the data sources have (a data file's
        whole range, else the stored bars'), or None when none is known."""
        span = await self.providers.span(symbol)
        if span is not None:
            return span
        try:
            async with self.db.session() as session:
                return await repo.stored_span(session, symbol=symbol)
        except DatabaseUnavailableError:
            return None

    async def list_symbols(self) -> SymbolList:
        """Return every symbol of the data files and the stored bars with its first and last
        bar and source (a data file's whole range; stored bars of other vendors)."""
        now = self.clock()
        listed = {(s, "csv"): (lo, hi) for s, lo, hi in await self.providers.listing()}
        async with self.db.session() as session:
            stored = await repo.stored_spans(session)
        for symbol, source, lo, hi in stored:
            listed.setdefault((symbol, source), (lo, hi))
        out = []
        for (symbol, source), (lo, hi) in sorted(listed.items()):
            try:
                normalize_symbol(symbol)
            except ValidationProblemError:  # a file named unlike any ticker (GOOG_btpy.csv)
                continue
            fresh = freshness(symbol, hi, now)
            out.append(
                SymbolInfo(
                    symbol=symbol,
                    first_bar=lo,
                    last_bar=hi,
                    source=source,
                    stale=fresh.stale,
                    age_sessions=fresh.age_sessions,
                )
            )
        return SymbolList(symbols=out, last_completed_session=last_final_day("SPY", now))

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
        with deadline(self.request_deadline_s):
            start, end = await self.resolve_window(symbol, start, end)
            label = ",".join(f"{n}({_param_label(p)})" for n, p in checked.items())
            result, level = await self.series.get_or_compute(
                f"indicators:{symbol}:{label}:{start}:{end}",
                lambda: self._series(symbol, checked, start, end),
                self.indicator_ttl_s,
                stale_s=self.stale_s,
            )
        return _from_cache(result, level) if level is not None else result

    async def _series(
        self, symbol: str, checked: Checked, start: date, end: date
    ) -> IndicatorSeries:
        warmup = max(quant.warmup_bars(n, p) for n, p in checked.items())
        loaded = await self.load(symbol, _bars_before(start, warmup), end)
        if loaded.frame.empty or loaded.frame.index[-1] < pd.Timestamp(start, tz="UTC"):
            await self._known(symbol)  # an unknown symbol is a 404 symbol_not_found
            raise no_data(symbol, start, end, await self.span(symbol))
        return await asyncio.to_thread(
            frames.indicator_series, symbol, loaded, checked, start=start, end=end, now=self.clock()
        )

    async def latest_indicator(
        self, raw_symbol: str, name: str, params: dict[str, Any]
    ) -> LatestIndicator:
        """Return the latest value(s) of one indicator on the latest available bar."""
        symbol = normalize_symbol(raw_symbol)
        checked = self._check_indicators([name], {name: params})[name]
        defaults = {k: p.default for k, p in quant.INDICATORS[name].params.items()}
        suffix = "" if checked == defaults else f"({_param_label(checked)})"
        with deadline(self.request_deadline_s):
            result, level = await self.latest.get_or_compute(
                f"indicators:{symbol}:{name}{suffix}",
                lambda: self._latest(symbol, name, checked),
                self.indicator_ttl_s,
                stale_s=self.stale_s,
            )
        return _from_cache(result, level) if level is not None else result

    async def _latest(self, symbol: str, name: str, checked: dict[str, Any]) -> LatestIndicator:
        end = await self._latest_day(symbol)
        start = _bars_before(end, quant.warmup_bars(name, checked) + 1)
        loaded = await self.load(symbol, start, end)
        result = await asyncio.to_thread(
            frames.latest_indicator, symbol, loaded, name, checked, self.clock()
        )
        try:
            async with self.db.session() as session:
                await repo.store_indicator_values(
                    session,
                    symbol=symbol,
                    timestamp=result.timestamp.astimezone(UTC),
                    values=dict(result.values),
                    parameters={"indicator": name, **checked},
                )
                await session.commit()
        except DatabaseUnavailableError as e:  # the value stands; it is stored next time
            log.warning("%s of %s not stored: %s", name, symbol, e)
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

        with deadline(self.request_deadline_s):  # one budget for the whole request
            results = list(await asyncio.gather(*(one(s) for s in symbols)))
        ok = sum(1 for r in results if r.ok)
        return BulkFetchResult(results=results, succeeded=ok, failed=len(results) - ok)
