"""Helpers for the job-contract tests: a started runner on a real database, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from shared.db import Database
from shared.jobs import JobRunner, JobStatus
from tests.unit.shared.job_app import SERVICE, job_settings

WAIT_S = 60.0  # a safety bound on every wait, never an assertion about speed


@asynccontextmanager
async def running(
    tmp_path: Path, *, service: str = SERVICE, database_url: str | None = None, **overrides: Any
) -> AsyncIterator[JobRunner]:
    """Yield a started JobRunner on a migrated database (SQLite under tmp_path by default)."""
    if database_url is not None:
        overrides["database_url"] = database_url
    settings = job_settings(tmp_path, **overrides)
    db = Database(settings.resolved_database_url())
    await db.migrate()
    runner = JobRunner(db, service=service, settings=settings)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.aclose()
        await db.dispose()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until check() is true (bounded by WAIT_S; the bound failing names what)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


async def finished(runner: JobRunner, job: JobStatus) -> JobStatus:
    """Wait until the job has ended (succeeded or failed); return its status."""

    async def ended() -> bool:
        return (await runner.get(job.id)).status in ("succeeded", "failed")

    await until(ended, f"job {job.id} to end")
    return await runner.get(job.id)


async def exists(path: Path) -> bool:
    """Return whether path exists (for `until`)."""
    return await asyncio.to_thread(path.exists)


def record_progress_writes(db: Database) -> list[dict[str, Any]]:
    """Return a list that fills with every progress write on jobs (SQLite), as column: value.

    A final write (the one that also sets `status`) is included with its `status`.
    """
    writes: list[dict[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if not statement.startswith("UPDATE jobs SET ") or "progress_done" not in statement:
            return
        assignments = statement.removeprefix("UPDATE jobs SET ").split(" WHERE ")[0]
        names = [part.split("=")[0].strip() for part in assignments.split(", ")]
        writes.append(dict(zip(names, params, strict=False)))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    return writes
