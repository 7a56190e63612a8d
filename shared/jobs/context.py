"""What a job's work sees: its request, progress reporting, and its tasks' executor."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from shared.jobs.errors import JobCancelledError
from shared.jobs.executors import Executor, TaskJob, Where
from shared.jobs.schemas import JobProgress

T = TypeVar("T")
R = TypeVar("R")
Listener = Callable[[float, float | None, str | None], None]


class JobContext:
    """Handed to a job's work: `report` progress, `run`/`map` tasks, check `cancelled`.

    Tasks run on the runner's executor (threads, processes or Dask). Their functions must be
    module-level functions of an importable module (process and Dask workers import them),
    and their arguments and results picklable.
    """

    def __init__(
        self,
        *,
        job_id: uuid.UUID,
        kind: str,
        request: dict[str, Any],
        executor: Executor,
        task_job: TaskJob,
        on_report: Callable[[JobProgress], None],
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.request = request
        self._executor = executor
        self._task_job = task_job
        self._on_report = on_report
        self._keys = itertools.count()
        self._listeners: dict[int, Listener] = {}

    @property
    def cancelled(self) -> bool:
        """Return True once the job was cancelled (or the service is stopping)."""
        return self._task_job.cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelledError when the job was cancelled."""
        if self.cancelled:
            raise JobCancelledError(f"Job {self.job_id} was cancelled.")

    def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Set the job's progress (stored in the database, throttled); never blocks."""
        if total is not None and total < 0:
            raise ValueError("total must be >= 0")
        progress = JobProgress(
            done=max(0.0, float(done)),
            total=None if total is None else float(total),
            message=message,
        )
        self._on_report(progress)

    def task_report(self, key: int, done: float, total: float | None, message: str | None) -> None:
        """Route one task's own report (from `shared.jobs.task_report`) to its listener."""
        listener = self._listeners.get(key)
        if listener is not None:
            listener(done, total, message)

    async def run(self, fn: Callable[..., R], /, *args: Any, where: Where = "thread") -> R:
        """Run fn(*args) as one task; its `task_report` calls become the job's progress."""
        key = next(self._keys)
        self._listeners[key] = lambda done, total, message: self.report(done, total, message)
        try:
            future = await self._executor.submit(self._task_job, key, fn, args, where)
            result: R = await future
            return result
        finally:
            self._listeners.pop(key, None)

    async def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        where: Where = "thread",
        what: str = "tasks",
    ) -> list[R]:
        """Run fn(item) for every item as tasks; return the results in item order.

        Progress is `done` of `len(items)`, advanced per finished task and, in between, by
        the fraction each running task reports of itself (`task_report`). The first task
        that raises cancels the ones not yet finished and fails the map.
        """
        pending_items = list(enumerate(items))
        n = len(pending_items)
        results: list[Any] = [None] * n
        if n == 0:
            return []
        finished = 0
        partial: dict[int, float] = {}

        def publish(message: str | None = None) -> None:
            done = finished + sum(partial.values())
            self.report(done, n, message or f"{finished} of {n} {what} done")

        def listener(key: int) -> Listener:
            def on_report(done: float, total: float | None, message: str | None) -> None:
                if total:
                    partial[key] = min(max(done / total, 0.0), 1.0)
                publish(message)

            return on_report

        window = max(1, 2 * await self._executor.capacity(where))
        pending: dict[asyncio.Future[Any], tuple[int, int]] = {}
        queue = iter(pending_items)
        publish()
        try:
            while True:
                while len(pending) < window:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    key = next(self._keys)
                    self._listeners[key] = listener(key)
                    future = await self._executor.submit(self._task_job, key, fn, (nxt[1],), where)
                    pending[future] = (key, nxt[0])
                if not pending:
                    break
                done_now, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done_now:
                    key, index = pending.pop(future)
                    self._listeners.pop(key, None)
                    partial.pop(key, None)
                    results[index] = future.result()
                    finished += 1
                publish()
        finally:
            for future, (key, _) in pending.items():
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: a second failure is not logged as lost
                future.cancel()
                self._listeners.pop(key, None)
        return results
