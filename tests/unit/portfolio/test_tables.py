"""The portfolio's tables: one head on its own chain, which creates what tables.py says."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from services.portfolio.tables import SCHEMA, metadata
from shared.db import Database
from shared.migrate import alembic_config


def test_one_alembic_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config(SCHEMA)).get_heads()
    assert len(heads) == 1, heads


def test_migration_creates_the_declared_tables_and_columns(tmp_path: Path) -> None:
    async def go() -> dict[str, set[str]]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
        await db.migrate(SCHEMA)
        async with db.engine.connect() as conn:

            def columns(c):  # type: ignore[no-untyped-def]
                insp = inspect(c)
                return {
                    t: {col["name"] for col in insp.get_columns(t)} for t in insp.get_table_names()
                }

            found: dict[str, set[str]] = await conn.run_sync(columns)
        await db.dispose()
        return found

    found = asyncio.run(go())
    for table in metadata.sorted_tables:
        assert table.name in found
        assert found[table.name] == {c.name for c in table.columns}, table.name
