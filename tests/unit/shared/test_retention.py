"""Stored rows have a life cycle: `trading prune` deletes runs (with their fills), finished
jobs and logged predictions past their retention, and nothing else. On SQLite here; the
same check runs on PostgreSQL in tests/integration/test_retention_pg.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from services.backtest.tables import ANALYSES, RESULTS, TRADES
from services.predictor.tables import PREDICTIONS
from shared.config import BaseServiceSettings
from shared.db import Database
from shared.retention import JOBS
from shared.tables import utcnow
from trading.cli import app
from trading.discovery import service_schemas

DAY = timedelta(days=1)


def _run(run_id: uuid.UUID, created: datetime) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "created_at": created,
        "strategy_name": "sma_crossover",
        "symbol": "AAPL",
        "start_date": created - 400 * DAY,
        "end_date": created - 40 * DAY,
        "initial_capital": 10_000.0,
        "final_capital": 11_000.0,
    }


def _fill(run_id: uuid.UUID, at: datetime) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "symbol": "AAPL",
        "timestamp": at,
        "direction": "buy",
        "shares": 1.0,
        "price": 100.0,
        "commission": 0.0,
        "slippage_cost": 0.0,
        "total_cost": 100.0,
    }


def _analysis(created: datetime) -> dict[str, Any]:
    return {
        "run_id": uuid.uuid4(),
        "kind": "walk_forward",
        "strategy_name": "sma_crossover",
        "symbol": "AAPL",
        "start_date": created - 400 * DAY,
        "end_date": created - 40 * DAY,
        "configuration": {},
        "bars_hash": "0" * 64,
        "result": {},
        "initial_capital": 10_000.0,
        "created_at": created,
    }


def _job(status: str, created: datetime, finished: datetime | None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "kind": "optimize",
        "service": "backtest",
        "status": status,
        "progress_done": 0.0,
        "request": {},
        "owner_host": "h",
        "owner_pid": 1,
        "owner_instance": "i" * 32,
        "heartbeat_at": finished or created,
        "created_at": created,
        "finished_at": finished,
        "updated_at": finished or created,
    }


def _prediction(created: datetime) -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "timestamp": created,
        "model_name": "default",
        "model_version": "1.0.0",
        "prediction_type": "direction",
        "created_at": created,
    }


async def seed(url: str, now: datetime) -> dict[str, uuid.UUID]:
    """Store an old and a recent row of every kind (jobs: old finished, old running)."""
    db = Database(url)
    try:
        await db.migrate(*service_schemas())
        old_run, new_run = uuid.uuid4(), uuid.uuid4()
        async with db.session() as session:
            await session.execute(
                insert(RESULTS), [_run(old_run, now - 400 * DAY), _run(new_run, now - DAY)]
            )
            await session.execute(
                insert(TRADES),
                [
                    _fill(old_run, now - 500 * DAY),
                    _fill(old_run, now - 450 * DAY),
                    _fill(new_run, now - 50 * DAY),
                ],
            )
            await session.execute(
                insert(JOBS),
                [
                    _job("succeeded", now - 60 * DAY, now - 60 * DAY),
                    _job("failed", now - 40 * DAY, now - 31 * DAY),
                    _job("succeeded", now - 40 * DAY, now - 29 * DAY),  # ended 29 days ago
                    _job("running", now - 60 * DAY, None),  # never pruned
                    _job("queued", now - 60 * DAY, None),
                ],
            )
            await session.execute(
                insert(ANALYSES), [_analysis(now - 400 * DAY), _analysis(now - DAY)]
            )
            await session.execute(
                insert(PREDICTIONS),
                [_prediction(now - 91 * DAY), _prediction(now - 89 * DAY), _prediction(now)],
            )
            await session.commit()
        return {"old": old_run, "new": new_run}
    finally:
        await db.dispose()


async def counts(url: str) -> dict[str, Any]:
    """Return what is left: run ids, fills per run, job statuses, predictions."""
    db = Database(url)
    try:
        async with db.session() as session:
            runs = set((await session.execute(select(RESULTS.c.run_id))).scalars())
            fills = dict(
                (
                    await session.execute(
                        select(TRADES.c.run_id, func.count()).group_by(TRADES.c.run_id)
                    )
                ).all()
            )
            jobs = sorted((await session.execute(select(JOBS.c.status))).scalars())
            predictions = (
                await session.execute(select(func.count()).select_from(PREDICTIONS))
            ).scalar()
        return {"runs": runs, "fills": fills, "jobs": jobs, "predictions": predictions}
    finally:
        await db.dispose()


def check_prune(url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed url, run `trading prune` with runs kept 365 days, and check what is left."""
    ids = asyncio.run(seed(url, utcnow()))
    for name in list(os.environ):
        if name.startswith("RETENTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("RETENTION_RUNS_DAYS", "365")
    settings = BaseServiceSettings()
    assert (settings.retention_jobs_days, settings.retention_predictions_days) == (30, 90)

    result = CliRunner().invoke(app, ["prune"])
    assert result.exit_code == 0, result.output
    assert "runs: 1 deleted" in result.output
    assert "analyses: 1 deleted" in result.output  # stored walk-forwards and searches
    assert "jobs: 2 deleted" in result.output
    assert "predictions: 1 deleted" in result.output

    left = asyncio.run(counts(url))
    assert left["runs"] == {ids["new"]}
    assert left["fills"] == {ids["new"]: 1}  # the old run's fills went with it
    assert left["jobs"] == ["queued", "running", "succeeded"]
    assert left["predictions"] == 2

    again = CliRunner().invoke(app, ["prune"])  # nothing more is old enough
    assert "runs: 0 deleted" in again.output and "jobs: 0 deleted" in again.output


def test_prune_applies_each_retention_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_prune(f"sqlite+aiosqlite:///{tmp_path / 'prune.db'}", tmp_path, monkeypatch)


def test_runs_are_kept_forever_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keep.db'}"
    asyncio.run(seed(url, utcnow()))
    monkeypatch.delenv("RETENTION_RUNS_DAYS", raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(app, ["prune"])
    assert result.exit_code == 0, result.output
    assert "runs: kept (no retention set)" in result.output
    assert len(asyncio.run(counts(url))["runs"]) == 2
