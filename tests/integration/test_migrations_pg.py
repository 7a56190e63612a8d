"""Per-service Alembic chains on PostgreSQL: a fresh database gets every table, and one the
single chain left at 0006 is adopted with its rows (the checks of
tests/unit/shared/test_migrations.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import inspect

from shared.db import Database
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
