"""The only code of the job contract that touches SQL (the `jobs` table).

Every function takes the session first and keyword-only arguments; the caller commits.
Writes after a job's creation are guarded (`WHERE status IN (...) AND owner_instance = ...`)
and return whether a row changed, so a job that was cancelled or interrupted meanwhile is
never overwritten.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import Problem
from shared.jobs.schemas import ACTIVE, JobProgress, JobState, JobStatus
from shared.tables import Job

JOBS: Table = Job.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Owner:
    """Who runs a job: the host, the process and the runner instance in it."""

    host: str
    pid: int
    instance: str


@dataclass(frozen=True)
class UnfinishedJob:
    """A queued or running job as the sweep sees it."""

    id: uuid.UUID
    status: JobState
    owner: Owner
    heartbeat_at: datetime


def aware(moment: datetime | None) -> datetime | None:
    """Return moment as timezone-aware UTC (SQLite hands back naive datetimes)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def to_status(row: Any) -> JobStatus:
    """Return the public status of one `jobs` row."""
    created = aware(row.created_at)
    updated = aware(row.updated_at)
    assert created is not None and updated is not None
    return JobStatus(
        id=row.id,
        kind=row.kind,
        status=row.status,
        progress=JobProgress(
            done=row.progress_done, total=row.progress_total, message=row.progress_message
        ),
        request=row.request or {},
        result=row.result,
        result_url=row.result_url,
        error=Problem.model_validate(row.error) if row.error else None,
        created_at=created,
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        updated_at=updated,
    )


def _changed(result: Any) -> bool:
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


async def insert_job(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    kind: str,
    service: str,
    request: dict[str, Any],
    owner: Owner,
    now: datetime,
) -> JobStatus:
    """Insert a queued job owned by owner; return its status."""
    values = {
        "id": job_id,
        "kind": kind,
        "service": service,
        "status": "queued",
        "progress_done": 0.0,
        "request": request,
        "owner_host": owner.host,
        "owner_pid": owner.pid,
        "owner_instance": owner.instance,
        "heartbeat_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await session.execute(insert(JOBS).values(**values))
    row = (await session.execute(select(JOBS).where(JOBS.c.id == job_id))).one()
    return to_status(row)


async def load_job(session: AsyncSession, *, job_id: uuid.UUID, service: str) -> JobStatus | None:
    """Return the status of one job of service, or None."""
    stmt = select(JOBS).where(JOBS.c.id == job_id, JOBS.c.service == service)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else to_status(row)


async def claim_job(
    session: AsyncSession, *, job_id: uuid.UUID, instance: str, now: datetime
) -> bool:
    """Move a queued job of instance to running; False if it is no longer queued."""
    stmt = (
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status == "queued", JOBS.c.owner_instance == instance)
        .values(status="running", started_at=now, updated_at=now, heartbeat_at=now)
    )
    return _changed(await session.execute(stmt))


async def write_progress(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    instance: str,
    progress: JobProgress,
    now: datetime,
) -> bool:
    """Store a running job's progress; False if it is no longer running under instance."""
    stmt = (
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status == "running", JOBS.c.owner_instance == instance)
        .values(
            progress_done=progress.done,
            progress_total=progress.total,
            progress_message=progress.message,
            updated_at=now,
        )
    )
    return _changed(await session.execute(stmt))


async def finish_job(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    instance: str,
    status: JobState,
    now: datetime,
    progress: JobProgress | None = None,
    result: Any = None,
    result_url: str | None = None,
    error: Problem | None = None,
) -> bool:
    """End an unfinished job of instance; False if it had already ended."""
    values: dict[str, Any] = {
        "status": status,
        "result": result,
        "result_url": result_url,
        "error": None if error is None else error.model_dump(mode="json", exclude_none=True),
        "finished_at": now,
        "updated_at": now,
    }
    if progress is not None:
        values.update(
            progress_done=progress.done,
            progress_total=progress.total,
            progress_message=progress.message,
        )
    stmt = (
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.in_(ACTIVE),
            JOBS.c.owner_instance == instance,
        )
        .values(**values)
    )
    return _changed(await session.execute(stmt))


async def cancel_job(
    session: AsyncSession, *, job_id: uuid.UUID, service: str, error: Problem, now: datetime
) -> bool:
    """Fail an unfinished job of service with error, whoever runs it; False if it had ended."""
    stmt = (
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.service == service, JOBS.c.status.in_(ACTIVE))
        .values(
            status="failed",
            error=error.model_dump(mode="json", exclude_none=True),
            finished_at=now,
            updated_at=now,
        )
    )
    return _changed(await session.execute(stmt))


async def beat(session: AsyncSession, *, instance: str, now: datetime) -> set[uuid.UUID]:
    """Stamp the heartbeat of instance's unfinished jobs; return their ids."""
    await session.execute(
        update(JOBS)
        .where(JOBS.c.owner_instance == instance, JOBS.c.status.in_(ACTIVE))
        .values(heartbeat_at=now)
    )
    stmt = select(JOBS.c.id).where(JOBS.c.owner_instance == instance, JOBS.c.status.in_(ACTIVE))
    return set((await session.execute(stmt)).scalars())


async def unfinished_jobs(session: AsyncSession, *, service: str) -> list[UnfinishedJob]:
    """Return every queued or running job of service, with its owner and heartbeat."""
    c = JOBS.c
    stmt = select(
        c.id, c.status, c.owner_host, c.owner_pid, c.owner_instance, c.heartbeat_at
    ).where(c.service == service, c.status.in_(ACTIVE))
    rows = (await session.execute(stmt)).all()
    return [
        UnfinishedJob(
            id=r.id,
            status=r.status,
            owner=Owner(host=r.owner_host, pid=r.owner_pid, instance=r.owner_instance),
            heartbeat_at=aware(r.heartbeat_at) or r.heartbeat_at,
        )
        for r in rows
    ]
