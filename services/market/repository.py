"""The only code of the market service that touches SQL (Redis goes through shared.cache)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.market.bars import BAR_COLUMNS, empty_bars
from services.market.tables import MarketBar, MarketDataCoverage, TechnicalIndicator

BARS: Table = MarketBar.__table__  # type: ignore[attr-defined]
COVERAGE: Table = MarketDataCoverage.__table__  # type: ignore[attr-defined]
INDICATORS: Table = TechnicalIndicator.__table__  # type: ignore[attr-defined]


def _utc(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _select_bars() -> Any:
    """Select the bar columns in the order `_frame` reads them."""
    c = BARS.c
    return select(c.timestamp, c.open, c.high, c.low, c.close, c.adjusted_close, c.volume, c.source)


async def load_bars(session: AsyncSession, *, symbol: str, start: date, end: date) -> pd.DataFrame:
    """Return stored bars of symbol between start and end inclusive, oldest first."""
    t = BARS
    stmt = (
        _select_bars()
        .where(t.c.symbol == symbol, t.c.timestamp >= _utc(start), t.c.timestamp <= _utc(end))
        .order_by(t.c.timestamp)
    )
    rows = (await session.execute(stmt)).all()
    return _frame(list(rows))


async def latest_bars(session: AsyncSession, *, symbol: str, n: int = 2) -> pd.DataFrame:
    """Return the n most recent stored bars of symbol, oldest first."""
    t = BARS
    stmt = _select_bars().where(t.c.symbol == symbol).order_by(t.c.timestamp.desc()).limit(n)
    rows = (await session.execute(stmt)).all()
    return _frame(list(reversed(rows)))


def _date(moment: datetime) -> date:
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)).date()


async def stored_span(session: AsyncSession, *, symbol: str) -> tuple[date, date] | None:
    """Return the first and last stored bar dates of symbol, or None when none is stored."""
    t = BARS
    stmt = select(func.min(t.c.timestamp), func.max(t.c.timestamp)).where(t.c.symbol == symbol)
    lo, hi = (await session.execute(stmt)).one()
    return None if lo is None else (_date(lo), _date(hi))


async def stored_spans(session: AsyncSession) -> list[tuple[str, str, date, date]]:
    """Return (symbol, source, first date, last date) of the stored bars, by symbol, source."""
    t = BARS
    stmt = (
        select(t.c.symbol, t.c.source, func.min(t.c.timestamp), func.max(t.c.timestamp))
        .group_by(t.c.symbol, t.c.source)
        .order_by(t.c.symbol, t.c.source)
    )
    rows = (await session.execute(stmt)).all()
    return [(r[0], str(r[1] or "unknown"), _date(r[2]), _date(r[3])) for r in rows]


def _frame(rows: list[Any]) -> pd.DataFrame:
    if not rows:
        frame = empty_bars()
        frame["source"] = pd.Series(dtype=object)
        return frame
    ts = pd.DatetimeIndex([r[0] for r in rows])
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    data = np.array([r[1:7] for r in rows], dtype="float64")
    frame = pd.DataFrame(data, index=ts.rename("timestamp"), columns=list(BAR_COLUMNS))
    frame["source"] = [r[7] for r in rows]
    return frame


async def upsert_bars(
    session: AsyncSession, *, symbol: str, frame: pd.DataFrame, source: str
) -> int:
    """Insert or refresh bars keyed by (symbol, timestamp); return the number written."""
    if frame.empty:
        return 0
    t = BARS
    now = datetime.now(UTC)
    records = [
        {
            "symbol": symbol,
            "timestamp": ts.to_pydatetime(),
            "open": float(row.open),
            "high": float(row.high),
            "low": float(row.low),
            "close": float(row.close),
            "volume": round(float(row.volume)),
            "adjusted_close": None if np.isnan(row.adj_close) else float(row.adj_close),
            "source": source,
            "created_at": now,
        }
        for ts, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    stmt = _insert(session, t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol", "timestamp"],
        set_={
            c: stmt.excluded[c]
            for c in ("open", "high", "low", "close", "volume", "adjusted_close", "source")
        },
    )
    # executemany: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues").
    await session.execute(stmt, records)
    return len(records)


async def coverage(session: AsyncSession, *, symbol: str) -> list[tuple[date, date]]:
    """Return the date ranges already asked of providers for symbol, merged and sorted."""
    t = COVERAGE
    rows = (
        await session.execute(
            select(t.c.start_date, t.c.end_date)
            .where(t.c.symbol == symbol)
            .order_by(t.c.start_date)
        )
    ).all()
    merged: list[tuple[date, date]] = []
    for lo_dt, hi_dt in rows:
        lo, hi = lo_dt.date(), hi_dt.date()
        if merged and lo.toordinal() <= merged[-1][1].toordinal() + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


async def add_coverage(
    session: AsyncSession, *, symbol: str, start: date, end: date, source: str, rows: int
) -> None:
    """Record that start..end was asked of a provider for symbol."""
    session.add(
        MarketDataCoverage(
            symbol=symbol, start_date=_utc(start), end_date=_utc(end), source=source, rows=rows
        )
    )


async def store_indicator_values(
    session: AsyncSession,
    *,
    symbol: str,
    timestamp: datetime,
    values: dict[str, float | None],
    parameters: dict[str, Any],
) -> None:
    """Record the latest value of each indicator output (idempotent)."""
    t = INDICATORS
    now = datetime.now(UTC)
    records = [
        {
            "symbol": symbol,
            "timestamp": timestamp,
            "indicator_name": name,
            "indicator_value": value,
            "parameters": parameters,
            "created_at": now,
        }
        for name, value in values.items()
    ]
    if not records:
        return
    stmt = _insert(session, t).values(records).on_conflict_do_nothing()
    await session.execute(stmt)
