"""Every prediction answered is logged to `predictions`, off the request's critical path.

`/predict` hands its row to :class:`PredictionLog` and answers; a background task writes the
rows in batches (one transaction per batch), gathering for `LINGER_S` after the first row so
that a steady stream of predictions costs a few transactions a second, not one each (a
transaction is about as much CPU as an uncached prediction, taken from the requests that
follow it). Readers that need every row written so far (`/performance`, `/update_online`)
call :meth:`PredictionLog.flush` first, which writes at once. A database outage
keeps rows queued (bounded) and retries; a row the database refuses is dropped and logged,
never blocking the others; on shutdown the queue is written out, within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.predictor import repository as repo
from shared.db import Database
from shared.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

BATCH = 500
MAX_QUEUED = 50_000
RETRY_S = 1.0
LINGER_S = 0.25  # gather rows this long before a write (flush and shutdown write at once)


class PredictionLog:
    """A queue of prediction rows and the task that writes them."""

    def __init__(self, db: Database, *, linger_s: float = LINGER_S) -> None:
        self.db = db
        self.linger_s = linger_s
        self._rows: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._now = asyncio.Event()  # a reader waits: write without lingering
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prediction-log")

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row of `predictions` columns; never blocks."""
        if len(self._rows) >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("prediction log full: %d predictions not logged", self.dropped)
            return
        self._rows.append(row)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every row queued so far is written; False if that took too long."""
        if self._task is None:
            return not self._rows
        if self._rows:
            self._now.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Write what is queued (within grace_s), then stop."""
        if self._task is None:
            return
        if not await self.flush(grace_s) and self._rows:
            log.warning("prediction log: %d predictions not written at shutdown", len(self._rows))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger_s > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger_s):
                        await self._now.wait()
            self._wake.clear()
            self._now.clear()
            while self._rows:
                batch = self._rows[:BATCH]
                try:
                    await self._write(batch)
                except DatabaseUnavailableError as e:  # keep the rows: the database is away
                    log.warning("prediction log: %d rows not written yet (%s)", len(batch), e)
                    await asyncio.sleep(RETRY_S)
                    continue
                except Exception:  # a row the database refuses: write the others one by one
                    await self._write_each(batch)
                del self._rows[: len(batch)]
            if not self._rows:
                self._idle.set()

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.session() as session:
            await repo.insert_predictions(session, rows=rows)
            await session.commit()

    async def _write_each(self, rows: list[dict[str, Any]]) -> None:
        """Write rows one at a time, dropping (and logging) those the database refuses."""
        for row in rows:
            for attempt in range(3):
                try:
                    await self._write([row])
                    break
                except DatabaseUnavailableError:
                    await asyncio.sleep(RETRY_S * (attempt + 1))
                except Exception as e:
                    self.dropped += 1
                    log.error(
                        "prediction log: dropped the prediction of %s at %s (%s: %s)",
                        row.get("symbol"),
                        row.get("timestamp"),
                        type(e).__name__,
                        e,
                    )
                    break
