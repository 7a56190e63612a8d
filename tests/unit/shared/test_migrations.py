"""Each service's Alembic chain and the platform's build every table on a fresh database,
downgrade alone, migrate once under concurrency, and adopt a database the single chain
(revisions 0001 to 0006, one `alembic_version`) built, rows in place.

On SQLite here; tests/integration/test_migrations_pg.py runs the same checks on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, insert, inspect, select, text

from services.backtest.tables import SCHEMA as BACKTEST
from services.market.tables import SCHEMA as MARKET
from services.portfolio.tables import SCHEMA as PORTFOLIO
from services.predictor.tables import SCHEMA as PREDICTOR
from shared.db import Database
from shared.migrate import LEGACY_VERSION_TABLE, Schema, adoption_point, alembic_config
from shared.tables import PLATFORM
from trading.discovery import service_schemas

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EVERY = (PLATFORM, BACKTEST, MARKET, PORTFOLIO, PREDICTOR)
T0 = datetime(2024, 1, 2, tzinfo=UTC)
RUN = uuid.uuid4()

# One row in a table of every chain, written before the split and read back after it.
LEGACY_ROWS: dict[str, dict[str, Any]] = {
    "jobs": {
        "id": uuid.uuid4(),
        "kind": "sweep",
        "service": "backtest",
        "status": "succeeded",
        "request": {"n": 1},
        "owner_host": "h",
        "owner_pid": 1,
        "owner_instance": "i",
        "heartbeat_at": T0,
        "updated_at": T0,
    },
    "market_data": {
        "symbol": "KO",
        "timestamp": T0,
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.25,
        "volume": 100,
    },
    "model_states": {"model_name": "default", "version": "1.0.0", "model_type": "ensemble"},
    "backtest_results": {
        "run_id": RUN,
        "strategy_name": "sma_crossover",
        "symbol": "KO",
        "start_date": T0,
        "end_date": T0,
        "initial_capital": 10_000.0,
        "final_capital": 10_500.0,
    },
    "backtest_trades": {
        "run_id": RUN,
        "symbol": "KO",
        "timestamp": T0,
        "direction": "buy",
        "shares": 10.0,
        "price": 1.25,
        "commission": 0.0,
        "slippage_cost": 0.0,
        "total_cost": 12.5,
    },
    "strategies": {"name": "s", "version": 1, "description": "", "rules": {}, "params": {}},
    "portfolio_accounts": {
        "id": uuid.uuid4(),
        "name": "paper",
        "broker": "paper",
        "initial_cash": 1_000.0,
        "cash": 1_000.0,
        "realised_pnl": 0.0,
        "halted": False,
    },
}


def every_table(schemas: tuple[Schema, ...] = EVERY) -> set[str]:
    """Return every table the schemas declare, and their version tables."""
    return {t for s in schemas for t in s.metadata.tables} | {s.version_table for s in schemas}


def _table(name: str) -> Any:
    return next(s.metadata.tables[name] for s in EVERY if name in s.metadata.tables)


def _columns(c: Connection) -> dict[str, set[str]]:
    insp = inspect(c)
    return {t: {col["name"] for col in insp.get_columns(t)} for t in insp.get_table_names()}


def _move(c: Connection, schema: Schema, target: str, down: bool) -> None:
    (command.downgrade if down else command.upgrade)(alembic_config(schema, c), target)


def test_discovery_finds_the_chain_of_every_service() -> None:
    assert {s.name for s in service_schemas()} == {s.name for s in EVERY} - {"platform"}


def test_each_chain_has_one_head_and_marks_what_the_single_chain_did() -> None:
    for schema in EVERY:
        script = ScriptDirectory.from_config(alembic_config(schema))
        assert len(script.get_heads()) == 1, schema.name
        # a chain adopted from the single chain's last revision is stamped at its head
        assert adoption_point(script, "0006") == script.get_current_head(), schema.name
    backtest = ScriptDirectory.from_config(alembic_config(BACKTEST))
    assert adoption_point(backtest, "0003") == "backtest_0002"  # 0004 and 0005 still to run
    assert adoption_point(backtest, "0002") == "backtest_0001"
    platform = ScriptDirectory.from_config(alembic_config(PLATFORM))
    assert adoption_point(platform, "0001") is None  # jobs came with 0002: built from base
    portfolio = ScriptDirectory.from_config(alembic_config(PORTFOLIO))
    assert adoption_point(portfolio, "0005") is None


def test_a_fresh_database_gets_every_table_and_a_chain_downgrades_alone(tmp_path: Path) -> None:
    async def go() -> tuple[dict[str, set[str]], set[str], set[str], bool, bool]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        try:
            await db.migrate(*service_schemas())
            async with db.engine.begin() as conn:
                found = await conn.run_sync(_columns)
                await conn.run_sync(_move, BACKTEST, "base", True)
                after_down = set((await conn.run_sync(_columns)).keys())
            again = await db.migrate(*service_schemas())  # the backtest's chain was at base
            at_head = await db.migrate(*service_schemas())
            async with db.engine.connect() as conn:
                rebuilt = set((await conn.run_sync(_columns)).keys())
        finally:
            await db.dispose()
        return found, after_down, rebuilt, again, at_head

    found, after_down, rebuilt, again, at_head = asyncio.run(go())
    assert set(found) == every_table()
    for schema in EVERY:
        for table in schema.metadata.tables.values():
            assert found[table.name] == {c.name for c in table.columns}, table.name
    assert after_down == every_table() - set(BACKTEST.metadata.tables)
    assert rebuilt == every_table()
    assert again and not at_head


def test_a_service_migrates_its_own_tables_and_the_platform_s(tmp_path: Path) -> None:
    async def go() -> set[str]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'market.db'}")
        try:
            await db.migrate(MARKET)
            async with db.engine.connect() as conn:
                return set((await conn.run_sync(_columns)).keys())
        finally:
            await db.dispose()

    assert asyncio.run(go()) == every_table((PLATFORM, MARKET))


def test_concurrent_migrations_on_one_sqlite_file_upgrade_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

    async def go() -> list[bool]:
        dbs = [Database(url) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(db.migrate(MARKET, PREDICTOR) for db in dbs)))
        finally:
            for db in dbs:
                await db.dispose()

    assert sorted(asyncio.run(go())) == [False, False, True]


async def adopt_legacy_database(url: str, load: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Build url as the single chain left it at 0006 (load), write a row into a table of
    every chain, migrate with per-service chains; return what is found afterwards."""
    await load()
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            for name, row in LEGACY_ROWS.items():
                await conn.execute(insert(_table(name)).values(**row))
        first = await db.migrate(*service_schemas())
        second = await db.migrate(*service_schemas())
        async with db.engine.begin() as conn:
            counts = {
                name: await conn.scalar(select(func.count()).select_from(_table(name)))
                for name in LEGACY_ROWS
            }
            close = await conn.scalar(select(_table("market_data").c.close))
            legacy = await conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}"))
            legacy_rows = legacy.all()
            heads = {
                s.name: await conn.scalar(text(f"SELECT version_num FROM {s.version_table}"))
                for s in EVERY
            }
            columns = await conn.run_sync(_columns)
            # the adopted chain is a working chain: down one revision and back up
            await conn.run_sync(_move, BACKTEST, "backtest_0003", True)
            without = set((await conn.run_sync(_columns)).keys())
            await conn.run_sync(_move, BACKTEST, "head", False)
            strategies = await conn.scalar(select(func.count()).select_from(_table("strategies")))
    finally:
        await db.dispose()
    return {
        "first": first,
        "second": second,
        "counts": counts,
        "close": close,
        "legacy": [tuple(r) for r in legacy_rows],
        "heads": heads,
        "columns": columns,
        "without": without,
        "strategies": strategies,
    }


def check_adoption(found: dict[str, Any]) -> None:
    """Assert that a database of the single chain was adopted with its rows and columns."""
    assert not found["first"] and not found["second"]  # adoption stamps, it builds nothing
    assert found["counts"] == dict.fromkeys(LEGACY_ROWS, 1)
    assert found["close"] == 1.25
    assert found["legacy"] == [("0006",)]  # left as it was, for a chain that starts later
    for schema in EVERY:
        script = ScriptDirectory.from_config(alembic_config(schema))
        assert found["heads"][schema.name] == script.get_current_head()
    assert set(found["columns"]) == every_table() | {LEGACY_VERSION_TABLE}
    for schema in EVERY:
        for table in schema.metadata.tables.values():
            assert found["columns"][table.name] == {c.name for c in table.columns}
    assert "strategies" not in found["without"]
    assert found["strategies"] == 0  # dropped and rebuilt by the backtest's own chain


def test_a_database_of_the_single_chain_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"

    async def load() -> None:
        with sqlite3.connect(path) as conn:
            conn.executescript((FIXTURES / "legacy_0006.sqlite.sql").read_text())

    check_adoption(asyncio.run(adopt_legacy_database(f"sqlite+aiosqlite:///{path}", load)))


def test_a_chain_that_starts_later_is_adopted_too(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "legacy_0006.sqlite.sql").read_text())

    async def go() -> tuple[bool, set[str]]:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate(MARKET)  # the market service is upgraded first ...
            changed = await db.migrate(PORTFOLIO)  # ... the portfolio a week later
            async with db.engine.connect() as conn:
                return changed, set((await conn.run_sync(_columns)).keys())
        finally:
            await db.dispose()

    changed, tables = asyncio.run(go())
    assert not changed
    legacy_tables = every_table() - {s.version_table for s in EVERY}
    assert tables == legacy_tables | {LEGACY_VERSION_TABLE} | {
        s.version_table for s in (PLATFORM, MARKET, PORTFOLIO)
    }


def test_an_unknown_single_chain_revision_stops_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);")
        conn.execute("INSERT INTO alembic_version VALUES ('9abc')")

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate(MARKET)
        finally:
            await db.dispose()

    with pytest.raises(RuntimeError, match="9abc"):
        asyncio.run(go())
    with sqlite3.connect(path) as conn:  # nothing was built on a database it cannot place
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"alembic_version"}


def test_every_table_belongs_to_one_chain() -> None:
    names = [t for s in EVERY for t in s.metadata.tables]
    assert len(names) == len(set(names)) == 16
