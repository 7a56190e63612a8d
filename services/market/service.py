"""Market-data domain logic: cache -> database -> provider, validation, indicators.

Never imports FastAPI: a CLI, a job or a test can call it directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from services.market import repository as repo
from services.market.calendar import last_completed_session, market_status
from services.market.providers import ProviderChain
from services.market.validation import (
    check_date_range,
    fill_short_gaps,
    normalize_symbol,
    quality_of,
    reject_bad_rows,
)
from shared import quant
from shared.cache import Cache
from shared.db import Database
from shared.errors import NotFoundError, ValidationProblemError

log = logging.getLogger(__name__)

# Bars of the last days may still change (late prints, today's bar): never mark them covered.
RECENT_DAYS = 4
INTERVALS = ("1d", "1wk", "1mo")


@dataclass
class Loaded:
    """Bars loaded for a window, with where they came from."""

    frame: pd.DataFrame
    served_from: str  # "database" | "provider"
    sources: list[str]
    rejected: list[dict[str, object]]


def _today() -> date:
    return datetime.now(UTC).date()


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


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
    stamps = [_iso(ts) for ts in frame.index]
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


def shape_bars(
    symbol: str, loaded: Loaded, *, fill_gaps: bool, adjusted: bool, interval: str
) -> tuple[list[dict[str, Any]], dict[str, object]]:
    """Check quality, optionally fill short gaps, adjust and resample; return (bars, report)."""
    report, missing = quality_of(symbol, loaded.frame, loaded.rejected)
    frame = loaded.frame
    if fill_gaps:
        frame = fill_short_gaps(frame, missing, report.gaps)
        report.filled_rows = int(frame["filled"].sum())
    if adjusted:
        frame = adjust(frame)
    frame = resample(frame, interval)
    return bar_records(frame, with_filled=fill_gaps), report.as_dict()


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
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ---------------------------------------------------------------- price
    async def get_price(self, raw_symbol: str) -> dict[str, Any]:
        """Return the latest price: cache, then a fresh-enough database row, then provider."""
        symbol = normalize_symbol(raw_symbol)
        key = f"market:price:{symbol}"
        cached, level = await self.cache.get(key, as_hash=True)
        if cached is not None:
            return {**cached, "cached": True, "cache_level": level}
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
        fields = {k: quote[k] for k in ("open", "high", "low", "close", "volume", "timestamp")}
        await self.cache.set(key, quote, self.price_ttl_s, hash_fields=fields)
        return {**quote, "cached": False, "cache_level": quote["served_from"]}

    @staticmethod
    def _quote(symbol: str, bars: pd.DataFrame, served_from: str, source: str) -> dict[str, Any]:
        last = bars.iloc[-1]
        prev = float(bars["close"].iloc[-2]) if len(bars) > 1 else None
        close = float(last["close"])
        change = close - prev if prev is not None else None
        return {
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
            "timestamp": _iso(bars.index[-1]),
            "source": source,
            "served_from": served_from,
        }

    # ----------------------------------------------------------- historical
    async def resolve_window(
        self, symbol: str, start: date | None, end: date | None, default_days: int = 365
    ) -> tuple[date, date]:
        """Fill in a missing end (latest available bar) and start (default_days before end)."""
        today = _today()
        check_date_range(start, end, today=today)
        if end is None:
            latest = await self.get_price(symbol)
            end = datetime.fromisoformat(latest["timestamp"]).date()
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
    ) -> dict[str, Any]:
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
        cached, level = await self.cache.get(key)
        if cached is not None:
            cached["metadata"] = {**cached["metadata"], "cached": True, "cache_level": level}
            return cached
        loaded = await self.load(symbol, start, end)
        if loaded.frame.empty and not await self._known(symbol):
            raise NotFoundError(f"Unknown symbol {symbol!r}", field="symbol")
        bars, quality = await asyncio.to_thread(
            shape_bars, symbol, loaded, fill_gaps=fill_gaps, adjusted=adjusted, interval=interval
        )
        result = {
            "symbol": symbol,
            "interval": interval,
            "adjusted": adjusted,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "bars": bars,
            "metadata": {
                "source": ",".join(loaded.sources) or None,
                "cached": False,
                "cache_level": loaded.served_from,
                "rows": len(bars),
                "quality": quality,
            },
        }
        ttl = (
            self.historical_ttl_s
            if end < _today() - timedelta(days=RECENT_DAYS)
            else self.price_ttl_s
        )
        await self.cache.set(key, result, ttl)
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
    ) -> dict[str, Any]:
        """Return indicator series for a window, computed with enough earlier history."""
        symbol = normalize_symbol(raw_symbol)
        checked = self._check_indicators(names, params)
        start, end = await self.resolve_window(symbol, start, end)
        label = ",".join(f"{n}({_param_label(p)})" for n, p in checked.items())
        key = f"indicators:{symbol}:{label}:{start}:{end}"
        cached, level = await self.cache.get(key)
        if cached is not None:
            return {**cached, "cached": True, "cache_level": level}
        warmup = max(quant.warmup_bars(n, p) for n, p in checked.items())
        loaded = await self.load(symbol, _bars_before(start, warmup), end)
        frame = loaded.frame
        if frame.empty and not await self._known(symbol):
            raise NotFoundError(f"Unknown symbol {symbol!r}", field="symbol")
        window = await asyncio.to_thread(indicator_window, frame, checked, start)
        result = {
            "symbol": symbol,
            "start": start.isoformat(),
            "end": end.isoformat(),
            **window,
            "parameters": checked,
            "source": ",".join(loaded.sources) or None,
        }
        await self.cache.set(key, result, self.indicator_ttl_s)
        return {**result, "cached": False, "cache_level": loaded.served_from}

    async def latest_indicator(
        self, raw_symbol: str, name: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the latest value(s) of one indicator on the latest available bar."""
        symbol = normalize_symbol(raw_symbol)
        checked = self._check_indicators([name], {name: params})[name]
        spec = quant.INDICATORS[name]
        defaults = {k: p.default for k, p in spec.params.items()}
        suffix = "" if checked == defaults else f"({_param_label(checked)})"
        key = f"indicators:{symbol}:{name}{suffix}"
        cached, level = await self.cache.get(key)
        if cached is not None:
            return {**cached, "cached": True, "cache_level": level}
        quote = await self.get_price(symbol)
        end = datetime.fromisoformat(quote["timestamp"]).date()
        loaded = await self.load(
            symbol, _bars_before(end, quant.warmup_bars(name, checked) + 1), end
        )
        frame = loaded.frame
        values = await asyncio.to_thread(_compute_all, frame, {name: checked})
        latest = {k: (None if math.isnan(v[-1]) else float(v[-1])) for k, v in values.items()}
        ts = frame.index[-1]
        result = {
            "symbol": symbol,
            "indicator": name,
            "parameters": checked,
            "timestamp": _iso(ts),
            "values": latest,
            "source": ",".join(loaded.sources) or None,
        }
        await self.cache.set(key, result, self.indicator_ttl_s)
        async with self.db.session() as session:
            await repo.store_indicator_values(
                session,
                symbol=symbol,
                timestamp=ts.to_pydatetime(),
                values=latest,
                parameters={"indicator": name, **checked},
            )
            await session.commit()
        return {**result, "cached": False, "cache_level": loaded.served_from}

    @staticmethod
    def _check_indicators(
        names: list[str], params: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        if not names:
            raise ValidationProblemError("name at least one indicator", field="indicators")
        unknown = [n for n in names if n not in quant.INDICATORS]
        if unknown:
            raise ValidationProblemError(
                f"unknown indicator(s) {', '.join(unknown)}; available: "
                f"{', '.join(quant.INDICATORS)}",
                field="indicators",
            )
        checked: dict[str, dict[str, Any]] = {}
        for name in dict.fromkeys(names):
            try:
                checked[name] = quant.validate_params(name, params.get(name, {}))
            except quant.IndicatorParamError as e:
                raise ValidationProblemError(str(e), field=e.field) from e
        return checked

    # ------------------------------------------------------ status and bulk
    async def market_status(self, at: datetime | None) -> dict[str, Any]:
        """Return NYSE status at an instant (default now)."""
        try:
            return await asyncio.to_thread(market_status, at)
        except ValueError as e:
            raise ValidationProblemError(str(e), field="at") from e

    async def bulk_fetch(
        self, symbols: list[str], *, kind: str, start: date | None, end: date | None
    ) -> list[dict[str, Any]]:
        """Fetch many symbols concurrently; one symbol's failure never fails the others."""
        gate = asyncio.Semaphore(self.bulk_concurrency)

        async def one(raw: str) -> dict[str, Any]:
            from shared.errors import AppError

            async with gate:
                try:
                    if kind == "price":
                        return {"symbol": raw, "ok": True, "price": await self.get_price(raw)}
                    hist = await self.get_history(raw, start=start, end=end)
                    return {"symbol": raw, "ok": True, "historical": hist}
                except AppError as e:
                    return {"symbol": raw, "ok": False, "error": e.to_problem().model_dump()}

        return list(await asyncio.gather(*(one(s) for s in symbols)))


def _param_label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _bars_before(day: date, bars: int) -> date:
    """Return a date at least `bars` trading sessions before day (calendar-day estimate)."""
    return day - timedelta(days=int(bars * 7 / 5 * 1.1) + 10)


def indicator_window(
    frame: pd.DataFrame, checked: dict[str, dict[str, Any]], start: date
) -> dict[str, Any]:
    """Compute indicators on every bar; return the window from start on, JSON-ready."""
    values = _compute_all(frame, checked)
    in_window = frame.index >= pd.Timestamp(start, tz="UTC")
    return {
        "timestamps": [_iso(ts) for ts in frame.index[in_window]],
        "values": {k: _nan_to_none(v[in_window]) for k, v in values.items()},
        "warmup_bars_used": int((~in_window).sum()),
    }


def _compute_all(frame: pd.DataFrame, checked: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    high = frame["high"].to_numpy("float64")
    low = frame["low"].to_numpy("float64")
    close = frame["close"].to_numpy("float64")
    out: dict[str, np.ndarray] = {}
    for name, params in checked.items():
        for output, values in quant.compute(name, params, high=high, low=low, close=close).items():
            out[quant.column_name(name, output)] = values
    return out
