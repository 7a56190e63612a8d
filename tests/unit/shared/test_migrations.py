"""Alembic migrations create the schema the tables declare, and downgrade cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from shared.db import Database, alembic_config

SEED_TABLES = {
    "market_data",
    "technical_indicators",
    "model_states",
    "predictions",
    "backtest_results",
    "backtest_trades",
}


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    async def go() -> tuple[set[str], set[str], set[str], list[dict]]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        await db.migrate()
        async with db.engine.begin() as conn:
            after_up = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            uniques = await conn.run_sync(
                lambda c: inspect(c).get_unique_constraints("market_data")
            )

            def down(c) -> None:  # type: ignore[no-untyped-def]
                cfg = alembic_config()
                cfg.attributes["connection"] = c
                command.downgrade(cfg, "base")

            await conn.run_sync(down)
            after_down = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert await db.migrate()  # it was at base: this call upgrades
        assert not await db.migrate()  # now at head: nothing to do
        async with db.engine.connect() as conn:
            again = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        await db.dispose()
        return after_up, after_down, again, uniques

    up, down, again, uniques = asyncio.run(go())
    assert up >= SEED_TABLES and {"market_data_coverage", "analysis_runs"} <= up
    assert down <= {"alembic_version"}
    assert again == up
    assert any(set(u["column_names"]) == {"symbol", "timestamp"} for u in uniques)


def test_concurrent_migrations_on_one_sqlite_file_upgrade_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

    async def go() -> list[bool]:
        dbs = [Database(url) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(db.migrate() for db in dbs)))
        finally:
            for db in dbs:
                await db.dispose()

    assert sorted(asyncio.run(go())) == [False, False, True]
