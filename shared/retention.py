"""How long stored rows live: one rule per kind of row, applied by `trading prune`.

Kinds: backtest runs and stored walk-forwards/searches (RETENTION_RUNS_DAYS), finished
jobs (RETENTION_JOBS_DAYS), logged predictions (RETENTION_PREDICTIONS_DAYS).

Each rule names a table, the moment a row's age counts from, the setting that says how
many days it lives (0: forever) and which rows it may touch (a queued or running job is
never pruned). A backtest run's fills go with it (deleted first: the cascade is not
relied on). Cached answers of a pruned run expire within `BACKTEST_RESULT_TTL_S`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import BaseServiceSettings
from shared.db import Database
from shared.tables import AnalysisRun, BacktestResult, BacktestTrade, Job, Prediction, utcnow

RESULTS: Table = BacktestResult.__table__  # type: ignore[attr-defined]
TRADES: Table = BacktestTrade.__table__  # type: ignore[attr-defined]
JOBS: Table = Job.__table__  # type: ignore[attr-defined]
PREDICTIONS: Table = Prediction.__table__  # type: ignore[attr-defined]
ANALYSES: Table = AnalysisRun.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RetentionRule:
    """Rows of table older than the setting's days (counted from `age_from`) are deleted."""

    name: str
    table: Table
    setting: str
    age_from: Callable[[Table], ColumnElement[Any]]
    only: Callable[[Table], ColumnElement[bool]] | None = None

    def days(self, settings: BaseServiceSettings) -> int:
        """Return how many days this kind of row lives (0: forever)."""
        return int(getattr(settings, self.setting))

    def condition(self, cutoff: datetime) -> ColumnElement[bool]:
        """Return the WHERE clause of the rows older than cutoff that may be pruned."""
        old = self.age_from(self.table) < cutoff
        return old if self.only is None else old & self.only(self.table)


RULES: tuple[RetentionRule, ...] = (
    RetentionRule("runs", RESULTS, "retention_runs_days", lambda t: t.c.created_at),
    RetentionRule(  # stored walk-forwards and searches: runs too, listed beside them
        "analyses", ANALYSES, "retention_runs_days", lambda t: t.c.created_at
    ),
    RetentionRule(
        "jobs",
        JOBS,
        "retention_jobs_days",
        lambda t: func.coalesce(t.c.finished_at, t.c.updated_at),
        only=lambda t: t.c.status.in_(("succeeded", "failed")),
    ),
    RetentionRule(
        "predictions", PREDICTIONS, "retention_predictions_days", lambda t: t.c.created_at
    ),
)


async def _prune_rule(session: AsyncSession, rule: RetentionRule, cutoff: datetime) -> int:
    condition = rule.condition(cutoff)
    if rule.table is RESULTS:
        old_runs = select(RESULTS.c.run_id).where(condition)
        await session.execute(delete(TRADES).where(TRADES.c.run_id.in_(old_runs)))
    result = await session.execute(delete(rule.table).where(condition))
    return int(getattr(result, "rowcount", 0) or 0)


async def prune(
    db: Database, settings: BaseServiceSettings, *, now: datetime | None = None
) -> dict[str, int | None]:
    """Delete every kind of row past its retention; return rows deleted per kind (None: kept
    forever). Each kind is its own transaction."""
    now = now or utcnow()
    deleted: dict[str, int | None] = {}
    for rule in RULES:
        days = rule.days(settings)
        if days <= 0:
            deleted[rule.name] = None
            continue
        async with db.session() as session:
            deleted[rule.name] = await _prune_rule(session, rule, now - timedelta(days=days))
            await session.commit()
    return deleted
