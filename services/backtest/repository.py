"""The only code that touches SQL for backtests: runs in `backtest_results`, fills in
`backtest_trades`, walk-forwards and searches in `analysis_runs`. Keyword-only arguments;
the caller owns the transaction."""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from services.backtest.tables import AnalysisRun, BacktestResult, BacktestTrade, StrategyVersion

RESULTS: Table = BacktestResult.__table__  # type: ignore[attr-defined]
TRADES: Table = BacktestTrade.__table__  # type: ignore[attr-defined]
ANALYSES: Table = AnalysisRun.__table__  # type: ignore[attr-defined]
STRATEGIES: Table = StrategyVersion.__table__  # type: ignore[attr-defined]


def aware(moment: datetime) -> datetime:
    """Return moment as UTC-aware (SQLite hands back naive datetimes)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def join_symbols(symbols: Sequence[str]) -> str:
    """Return the `symbols` column value: every instrument between commas."""
    return "," + ",".join(symbols) + ","


def split_symbols(row: Any) -> list[str]:
    """Return a row's instruments (seed rows without `symbols` have their one `symbol`)."""
    if row.symbols:
        return [s for s in row.symbols.split(",") if s]
    return [row.symbol]


@dataclass(frozen=True)
class Series:
    """A run's per-bar dates, equity and buy-and-hold equity."""

    dates: np.ndarray  # datetime64[D]
    equity: np.ndarray
    benchmark: np.ndarray


def encode_series(series: Series) -> bytes:
    """Return the series as one (3, n) float64 .npy array (dates as days since 1970)."""
    days = series.dates.astype("datetime64[D]").astype(np.int64).astype(np.float64)
    buf = io.BytesIO()
    np.save(buf, np.vstack([days, series.equity, series.benchmark]), allow_pickle=False)
    return buf.getvalue()


def decode_series(blob: bytes) -> Series:
    """Return the series stored by `encode_series`."""
    a = np.load(io.BytesIO(blob), allow_pickle=False)
    return Series(
        dates=a[0].astype(np.int64).astype("datetime64[D]"),
        equity=np.ascontiguousarray(a[1]),
        benchmark=np.ascontiguousarray(a[2]),
    )


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


async def insert_run(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    created_at: datetime,
    strategy: str,
    symbols: Sequence[str],
    start_date: date,
    end_date: date,
    initial_capital: float,
    final_capital: float,
    headline: dict[str, float | int | None],
    configuration: dict[str, Any],
    metrics: dict[str, Any],
    bars_hash: str,
    series: Series,
    fills: Mapping[str, Sequence[Any]],
) -> None:
    """Add one run and its fills (columns of values in fill order, as `fill_columns`)."""
    await session.execute(
        insert(RESULTS).values(
            run_id=run_id,
            created_at=created_at,
            strategy_name=strategy,
            symbol=symbols[0],
            symbols=join_symbols(symbols),
            start_date=_day(start_date),
            end_date=_day(end_date),
            initial_capital=initial_capital,
            final_capital=final_capital,
            total_return=headline.get("total_return"),
            sharpe_ratio=headline.get("sharpe_ratio"),
            max_drawdown=headline.get("max_drawdown"),
            win_rate=headline.get("win_rate"),
            total_trades=headline.get("total_trades"),
            configuration=configuration,
            metrics=metrics,
            bars_hash=bars_hash,
            series=encode_series(series),
        )
    )
    if fills and len(next(iter(fills.values()))):
        await insert_many(session, TRADES, fills, run_id=run_id)


_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[str], list[Any]]] = {}


def _insert_sql(
    dialect: Dialect, table: Table, names: tuple[str, ...]
) -> tuple[str, list[str], list[Any]]:
    """Return (driver SQL, parameter order, bind processor per column) of an INSERT."""
    key = (dialect.name, table.name, names)
    hit = _INSERTS.get(key)
    if hit is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(names))
        order = list(compiled.positiontup or names) if compiled.positional else list(names)
        procs = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in order]
        hit = _INSERTS[key] = (str(compiled), order, procs)
    return hit


async def insert_many(
    session: AsyncSession, table: Table, columns: Mapping[str, Sequence[Any]], **same: Any
) -> None:
    """Insert rows given as columns (name -> values) with one driver-level executemany.

    Values go through the column type's bind processor, as SQLAlchemy's own executemany
    would pass them, but column by column and without compiling parameters row by row
    (which cost ~10 microseconds a row); values in ``same`` (one for every row) are
    converted once.
    """
    conn = await session.connection()
    size = len(next(iter(columns.values())))
    names = tuple(same) + tuple(columns)
    sql, order, procs = _insert_sql(conn.dialect, table, names)
    values: list[Sequence[Any]] = []
    for name, proc in zip(order, procs, strict=True):
        if name in same:
            value = proc(same[name]) if proc else same[name]
            values.append([value] * size)
        else:
            column = columns[name]
            values.append([proc(v) for v in column] if proc else column)
    if conn.dialect.positional:
        params: list[Any] = list(zip(*values, strict=True))
    else:
        params = [dict(zip(order, row, strict=True)) for row in zip(*values, strict=True)]
    await conn.exec_driver_sql(sql, params)


async def update_run_metrics(
    session: AsyncSession, *, run_id: uuid.UUID, metrics: dict[str, Any]
) -> None:
    """Replace a run's stored metrics document."""
    await session.execute(update(RESULTS).where(RESULTS.c.run_id == run_id).values(metrics=metrics))


async def delete_run(session: AsyncSession, *, run_id: uuid.UUID) -> bool:
    """Delete a stored run (with its fills), walk-forward or search; return whether there
    was one."""
    await session.execute(delete(TRADES).where(TRADES.c.run_id == run_id))
    runs = await session.execute(delete(RESULTS).where(RESULTS.c.run_id == run_id))
    analyses = await session.execute(delete(ANALYSES).where(ANALYSES.c.run_id == run_id))
    return bool(getattr(runs, "rowcount", 0) or getattr(analyses, "rowcount", 0))


async def load_run(session: AsyncSession, *, run_id: uuid.UUID) -> Any | None:
    """Return one stored run (a row with the table's columns), or None."""
    t = RESULTS
    return (await session.execute(select(t).where(t.c.run_id == run_id))).first()


def _like_symbol(symbol: str) -> str:
    """The LIKE pattern of a symbol inside a run's `,A,B,` symbols column ('/' escapes)."""
    escaped = symbol.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%,{escaped},%"


def _run_filter(by_strategy: bool, by_symbol: bool) -> list[Any]:
    c = RESULTS.c
    conditions: list[Any] = []
    if by_strategy:
        conditions.append(c.strategy_name == bindparam("strategy"))
    if by_symbol:
        conditions.append(
            or_(
                c.symbols.like(bindparam("symbol_like"), escape="/"),
                and_(c.symbols.is_(None), c.symbol == bindparam("symbol")),
            )
        )
    return conditions


def _analysis_filter(kind: str | None, by_strategy: bool, by_symbol: bool) -> list[Any]:
    c = ANALYSES.c
    conditions: list[Any] = []
    if kind:
        conditions.append(c.kind == bindparam("kind"))
    if by_strategy:
        conditions.append(c.strategy_name == bindparam("strategy"))
    if by_symbol:
        conditions.append(c.symbol == bindparam("symbol"))
    return conditions


# A listed run's figures (a search's are its winner's), then every column a listed run has.
HEADLINE = (
    "final_capital",
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "win_rate",
    "total_trades",
)
LISTED = (
    "run_id",
    "kind",
    "created_at",
    "strategy_name",
    "symbol",
    "symbols",
    "start_date",
    "end_date",
    "initial_capital",
    *HEADLINE,
)


async def list_runs(
    session: AsyncSession,
    *,
    kind: str | None,
    strategy: str | None,
    symbol: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Any], int]:
    """Return (a page of stored runs of every kind, or of one, newest first; the number
    matching): the `LISTED` columns only (never a run's series)."""
    runs = _listing(kind, bool(strategy), bool(symbol))
    params: dict[str, Any] = {"kind": kind, "strategy": strategy, "symbol": symbol}
    if symbol:
        params["symbol_like"] = _like_symbol(symbol)
    total = await session.scalar(select(func.count()).select_from(runs), params)
    rows = await session.execute(
        select(runs)
        .order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
        .limit(limit)
        .offset(offset),
        params,
    )
    return list(rows.all()), int(total or 0)


@functools.lru_cache(maxsize=64)
def _listing(kind: str | None, by_strategy: bool, by_symbol: bool) -> Any:
    """The listing's union of both run tables for one shape of filters, built once.

    Values come as bind parameters (`kind`, `strategy`, `symbol`, `symbol_like`): building
    a union's column collections took milliseconds of the event loop per request, in
    front of every other client's request (bench/adversarial.py results_list).
    """
    parts = []
    if kind in (None, "backtest"):
        b = RESULTS.c
        columns: dict[str, Any] = {n: b[n] for n in LISTED if n in b}
        columns["kind"] = literal("backtest")
        parts.append(
            select(*(columns[n].label(n) for n in LISTED)).where(
                *_run_filter(by_strategy, by_symbol)
            )
        )
    if kind != "backtest":
        a = ANALYSES.c
        columns_a: dict[str, Any] = {n: a[n] for n in LISTED if n in a}
        columns_a["symbols"] = null()
        parts.append(
            select(*(columns_a[n].label(n) for n in LISTED)).where(
                *_analysis_filter(kind, by_strategy, by_symbol)
            )
        )
    runs = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    runs.c  # noqa: B018  (the column collection, built here once rather than per request)
    return runs


async def insert_analysis(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    kind: str,
    created_at: datetime,
    strategy: str,
    symbol: str,
    start_date: date,
    end_date: date,
    configuration: dict[str, Any],
    bars_hash: str,
    result: dict[str, Any],
    series: Series | None,
    initial_capital: float,
    headline: dict[str, float | int | None],
) -> None:
    """Add one walk-forward or search (a walk-forward with its stitched series)."""
    await session.execute(
        insert(ANALYSES).values(
            run_id=run_id,
            kind=kind,
            created_at=created_at,
            strategy_name=strategy,
            symbol=symbol,
            start_date=_day(start_date),
            end_date=_day(end_date),
            configuration=configuration,
            bars_hash=bars_hash,
            result=result,
            series=encode_series(series) if series is not None else None,
            initial_capital=initial_capital,
            **{k: headline.get(k) for k in HEADLINE},
        )
    )


async def load_analysis(session: AsyncSession, *, run_id: uuid.UUID) -> Any | None:
    """Return one stored walk-forward or search (a row with the table's columns), or None."""
    t = ANALYSES
    return (await session.execute(select(t).where(t.c.run_id == run_id))).first()


async def load_fills(
    session: AsyncSession, *, run_id: uuid.UUID, limit: int | None = None, offset: int = 0
) -> tuple[list[Any], int]:
    """Return (a page of a run's fills in fill order, how many it has)."""
    t = TRADES
    total = await session.scalar(select(func.count()).select_from(t).where(t.c.run_id == run_id))
    query = select(t).where(t.c.run_id == run_id).order_by(t.c.timestamp, t.c.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = await session.execute(query)
    return list(rows.all()), int(total or 0)


async def load_trade_returns(session: AsyncSession, *, run_id: uuid.UUID) -> np.ndarray:
    """Return a run's closed-trade returns in fill order (one column, not the fills)."""
    t = TRADES
    query = (
        select(t.c.trade_return)
        .where(t.c.run_id == run_id, t.c.trade_return.is_not(None))
        .order_by(t.c.timestamp, t.c.id)
    )
    values = (await session.execute(query)).scalars().all()
    return np.asarray(values, dtype=np.float64)


async def load_fill_marks(
    session: AsyncSession, *, run_id: uuid.UUID, most: int
) -> list[tuple[datetime, str]]:
    """Return (timestamp, direction) of at most ``most`` of a run's fills, evenly spread."""
    t = TRADES
    total = int(
        await session.scalar(select(func.count()).select_from(t).where(t.c.run_id == run_id)) or 0
    )
    step = max(1, -(-total // max(1, most)))
    numbered = select(
        t.c.timestamp,
        t.c.direction,
        func.row_number().over(order_by=(t.c.timestamp, t.c.id)).label("n"),
    ).where(t.c.run_id == run_id)
    sub = numbered.subquery()
    query = select(sub.c.timestamp, sub.c.direction).order_by(sub.c.n)
    if step > 1:
        query = query.where((sub.c.n - 1) % step == 0)
    rows = (await session.execute(query)).all()
    return [(r.timestamp, r.direction) for r in rows]


# ---- saved strategies ---------------------------------------------------------------------


async def save_strategy(
    session: AsyncSession,
    *,
    name: str,
    description: str,
    rules: dict[str, Any],
    params: dict[str, Any],
) -> Any:
    """Insert the next version of ``name`` (retired names start again above their last);
    return the row. Two concurrent saves of one name: the unique (name, version) key fails
    the second (IntegrityError; the caller retries)."""
    last = await session.scalar(
        select(func.max(STRATEGIES.c.version)).where(STRATEGIES.c.name == name)
    )
    version = int(last or 0) + 1
    await session.execute(
        insert(STRATEGIES).values(
            name=name,
            version=version,
            description=description,
            rules=rules,
            params=params,
            created_at=datetime.now(UTC),
        )
    )
    return await load_strategy(session, name=name, version=version, retired=True)


async def load_strategy(
    session: AsyncSession, *, name: str, version: int | None = None, retired: bool = False
) -> Any:
    """Return one version of a saved strategy (the latest when None), or None."""
    q = select(STRATEGIES).where(STRATEGIES.c.name == name)
    if not retired:
        q = q.where(STRATEGIES.c.retired_at.is_(None))
    if version is not None:
        q = q.where(STRATEGIES.c.version == version)
    q = q.order_by(STRATEGIES.c.version.desc()).limit(1)
    return (await session.execute(q)).first()


async def list_strategies(session: AsyncSession) -> list[Any]:
    """Return the latest version of every saved strategy not retired, by name."""
    latest = (
        select(STRATEGIES.c.name, func.max(STRATEGIES.c.version).label("version"))
        .where(STRATEGIES.c.retired_at.is_(None))
        .group_by(STRATEGIES.c.name)
        .subquery()
    )
    q = (
        select(STRATEGIES)
        .join(
            latest,
            and_(STRATEGIES.c.name == latest.c.name, STRATEGIES.c.version == latest.c.version),
        )
        .order_by(STRATEGIES.c.name)
    )
    return list((await session.execute(q)).all())


async def strategy_names(session: AsyncSession) -> list[str]:
    """Return the names of the saved strategies not retired."""
    q = select(STRATEGIES.c.name).where(STRATEGIES.c.retired_at.is_(None)).distinct()
    return [r[0] for r in (await session.execute(q)).all()]


async def retire_strategy(session: AsyncSession, *, name: str) -> int:
    """Mark every version of ``name`` retired; return how many were live."""
    result = await session.execute(
        update(STRATEGIES)
        .where(STRATEGIES.c.name == name, STRATEGIES.c.retired_at.is_(None))
        .values(retired_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
