"""Per-service Alembic chains on PostgreSQL: a fresh database gets every table, and one the
single chain left at 0006 is adopted with its rows (the checks of
tests/unit/shared/test_migrations.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import inspect, text

from services.market.tables import SCHEMA as MARKET
from services.predictor.tables import SCHEMA as PREDICTOR
from shared.db import Database
from shared.tables import PLATFORM
from tests.unit.shared.test_migrations import (
    FIXTURES,
    adopt_legacy_database,
    check_adoption,
    every_table,
)
from trading.discovery import service_schemas

pytestmark = pytest.mark.integration


def test_a_fresh_database_gets_every_table_on_postgresql(pg_url: str) -> None:
    async def go() -> set[str]:
        db = Database(pg_url)
        try:
            assert await db.migrate(*service_schemas())
            async with db.engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await db.dispose()

    assert asyncio.run(go()) == every_table()


def test_a_database_of_the_single_chain_is_adopted_on_postgresql(pg_url: str) -> None:
    async def load() -> None:
        conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute((FIXTURES / "legacy_0006.postgresql.sql").read_text())
        finally:
            await conn.close()

    check_adoption(asyncio.run(adopt_legacy_database(pg_url, load)))


def test_services_starting_together_each_build_their_own_chain_once(pg_url: str) -> None:
    async def go() -> tuple[list[bool], set[str], dict[str, int]]:
        dbs = [Database(pg_url) for _ in range(4)]
        try:
            changed = await asyncio.gather(
                dbs[0].migrate(MARKET),
                dbs[1].migrate(PREDICTOR),
                dbs[2].migrate(MARKET),
                dbs[3].migrate(PREDICTOR),
            )
            async with dbs[0].engine.connect() as conn:
                tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                rows = {
                    s.name: int(await conn.scalar(text(f"SELECT count(*) FROM {s.version_table}")))
                    for s in (PLATFORM, MARKET, PREDICTOR)
                }
        finally:
            for db in dbs:
                await db.dispose()
        return list(changed), tables, rows

    changed, tables, rows = asyncio.run(go())
    # under the advisory lock: the first of each service builds, its twin finds it at head
    assert sorted(changed[0::2]) == [False, True] and sorted(changed[1::2]) == [False, True]
    assert tables == every_table((PLATFORM, MARKET, PREDICTOR))
    assert rows == {"platform": 1, "market": 1, "predictor": 1}
