"""How long stored rows live: one rule per kind of row, applied by `trading prune`.

The platform's rule is here (finished jobs, RETENTION_JOBS_DAYS); each service declares the
rules of its own tables beside them (`RETENTION` in `services/<name>/tables.py`: backtest
runs and stored walk-forwards/searches, RETENTION_RUNS_DAYS; logged predictions,
RETENTION_PREDICTIONS_DAYS).

Each rule names a table, the moment a row's age counts from, the setting that says how
many days it lives (0: forever), which rows it may touch (a queued or running job is
never pruned) and the rows of other tables that go with a pruned row (deleted first: a
database cascade is not relied on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import BaseServiceSettings
from shared.db import Database
from shared.tables import Job, utcnow

JOBS: Table = Job.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RetentionRule:
    """Rows of table older than the setting's days (counted from `age_from`) are deleted."""

    name: str
    table: Table
    setting: str
    age_from: Callable[[Table], ColumnElement[Any]]
    only: Callable[[Table], ColumnElement[bool]] | None = None
    # columns of other tables whose foreign key points into table: their rows go first
    dependents: tuple[Column[Any], ...] = ()

    def days(self, settings: BaseServiceSettings) -> int:
        """Return how many days this kind of row lives (0: forever)."""
        return int(getattr(settings, self.setting))

    def condition(self, cutoff: datetime) -> ColumnElement[bool]:
        """Return the WHERE clause of the rows older than cutoff that may be pruned."""
        old = self.age_from(self.table) < cutoff
        return old if self.only is None else old & self.only(self.table)


PLATFORM_RULES: tuple[RetentionRule, ...] = (
    RetentionRule(
        "jobs",
        JOBS,
        "retention_jobs_days",
        lambda t: func.coalesce(t.c.finished_at, t.c.updated_at),
        only=lambda t: t.c.status.in_(("succeeded", "failed")),
    ),
)


async def _prune_rule(session: AsyncSession, rule: RetentionRule, cutoff: datetime) -> int:
    condition = rule.condition(cutoff)
    for column in rule.dependents:
        (key,) = column.foreign_keys
        old = select(key.column).where(condition)
        await session.execute(delete(column.table).where(column.in_(old)))
    result = await session.execute(delete(rule.table).where(condition))
    return int(getattr(result, "rowcount", 0) or 0)


async def prune(
    db: Database,
    settings: BaseServiceSettings,
    rules: Iterable[RetentionRule],
    *,
    now: datetime | None = None,
) -> dict[str, int | None]:
    """Delete every kind of row of rules past its retention; return rows deleted per kind
    (None: kept forever). Each kind is its own transaction."""
    now = now or utcnow()
    deleted: dict[str, int | None] = {}
    for rule in rules:
        days = rule.days(settings)
        if days <= 0:
            deleted[rule.name] = None
            continue
        async with db.session() as session:
            deleted[rule.name] = await _prune_rule(session, rule, now - timedelta(days=days))
            await session.commit()
    return deleted
