"""JobRunner: accepts jobs, runs their work off the event loop, keeps their state in the DB."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from shared.config import BaseServiceSettings
from shared.db import Database
from shared.errors import AppError, DatabaseUnavailableError, Problem, ValidationProblemError
from shared.jobs import store
from shared.jobs.context import JobContext
from shared.jobs.errors import (
    JobCancelledError,
    JobFailedError,
    JobFinishedError,
    JobInterruptedError,
    JobNotFoundError,
    JobRunTimeoutError,
    JobsFullError,
    JobsUnavailableError,
    logged_failure,
)
from shared.jobs.executors import DaskExecutor, Executor, LocalExecutor, TaskJob
from shared.jobs.schemas import JobProgress, JobState, JobStatus, ResultUrl
from shared.tables import utcnow

log = logging.getLogger(__name__)

Work = Callable[[JobContext], Awaitable[Any]]

# Runner instances alive in this process: a job owned by this pid but by none of these
# belongs to a runner that stopped without finishing it.
_LIVE_INSTANCES: set[str] = set()
_FINAL_WRITE_ATTEMPTS = 10
# The `Idempotency-Key` of the HTTP request being served ("" without one), set by
# shared.jobs.routes.IdempotencyKey; None outside a request (a direct call never dedupes).
IDEMPOTENCY_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "idempotency_key", default=None
)


def host_identity() -> str:
    """Return this host's name, plus its PID namespace where Linux exposes one.

    Containers can share a hostname (host networking) without sharing process ids, so two
    owners are on "the same host" for the dead-pid check only if both parts match.
    """
    name = socket.gethostname()
    try:
        return f"{name}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return name


def _pid_alive(pid: int) -> bool:
    """Return True if a process with this pid exists here and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _strict_json(value: Any, what: str) -> Any:
    """Return value as plain JSON data; raise ValidationProblemError if it is not JSON."""
    try:
        data = to_jsonable_python(value)
        json.dumps(data, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError) as e:
        raise ValidationProblemError(f"The job's {what} is not JSON: {e}", field=what) from e
    return data


@dataclass(eq=False)
class _Final:
    status: JobState
    progress: JobProgress | None = None
    result: Any = None
    result_url: str | None = None
    error: Problem | None = None
    attempts: int = 0


@dataclass(eq=False)
class _Active:
    """A job this runner owns and has not finished."""

    id: uuid.UUID
    kind: str
    work: Work
    request: dict[str, Any]
    task: TaskJob = field(default_factory=TaskJob)
    progress: JobProgress = field(default_factory=JobProgress)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    drive: asyncio.Task[None] | None = None
    flusher: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    stop_reason: str | None = None  # "cancelled" | "lost" | "shutdown" | "timeout"
    finalized: bool = False
    fingerprint: str = ""
    key: str | None = None
    accepted_at: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class JobRunner:
    """Run one service's jobs: state in the database, work on threads/processes/Dask.

    `start()` after `db.migrate()` in the service's lifespan, `aclose()` on its way out.
    """

    def __init__(
        self, db: Database, *, service: str, settings: BaseServiceSettings | None = None
    ) -> None:
        self.db = db
        self.service = service
        self.settings = settings or BaseServiceSettings()
        self.owner = store.Owner(host=host_identity(), pid=os.getpid(), instance=uuid.uuid4().hex)
        self._executor: Executor | None = None
        self._active: dict[uuid.UUID, _Active] = {}
        self._by_token: dict[int, _Active] = {}
        self._finals: dict[uuid.UUID, _Final] = {}
        self._running: asyncio.Semaphore | None = None
        self._queued: list[_Active] = []  # waiting for a slot, in submission order
        self._heartbeat: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def executor(self) -> Executor:
        """Return the executor of the started runner."""
        if self._executor is None:
            raise JobsUnavailableError(f"The {self.service} job runner is not started.")
        return self._executor

    async def start(self) -> None:
        """Mark jobs of dead owners interrupted, then start heartbeats and accept jobs."""
        s = self.settings
        _LIVE_INSTANCES.add(self.owner.instance)
        self._running = asyncio.Semaphore(s.job_max_running)
        if s.dask_scheduler_address:
            self._executor = DaskExecutor(
                s.dask_scheduler_address, sink=self._task_report, instance=self.owner.instance
            )
        else:
            self._executor = LocalExecutor(
                threads=s.job_thread_workers,
                processes=s.job_process_workers,
                sink=self._task_report,
                process_idle_s=s.job_process_idle_s,
            )
        try:
            swept = await self.sweep()
        except Exception as e:  # the database may be down at startup: the heartbeat retries
            log.warning("%s jobs: startup sweep failed (%s); will retry", self.service, e)
        else:
            if swept:
                log.info("%s jobs: %d left unfinished by a stopped process", self.service, swept)
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="job-heartbeat")
        self._accepting = True

    async def aclose(self) -> None:
        """Stop accepting; mark unfinished jobs interrupted; stop the workers."""
        self._accepting = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        jobs = list(self._active.values())
        for job in jobs:
            self._stop(job, "shutdown")
        drives = [job.drive for job in jobs if job.drive is not None]
        if drives:
            await asyncio.gather(*drives, return_exceptions=True)
        await self._retry_finals()
        if self._executor is not None:
            await self._executor.aclose(self.settings.job_shutdown_grace_s)
        _LIVE_INSTANCES.discard(self.owner.instance)

    async def __aenter__(self) -> JobRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the public API ------------------------------------------------------------------

    def _same_job(self, fingerprint: str, key: str | None) -> _Active | None:
        """Return the unfinished job this submission repeats (same key, else same request)."""
        window = self.settings.job_dedupe_s
        if window <= 0:
            return None
        now = time.monotonic()
        for job in self._active.values():
            if job.finalized or job.stop_reason is not None or now - job.accepted_at > window:
                continue
            if (key is not None and job.key == key) or (
                key is None and job.key is None and job.fingerprint == fingerprint
            ):
                return job
        return None

    async def submit(
        self,
        kind: str,
        request: BaseModel | Mapping[str, Any] | None,
        work: Work,
        *,
        idempotency_key: str | None = None,
    ) -> JobStatus:
        """Store a queued job and start work(ctx) when a slot is free; return its status.

        A submission over HTTP that repeats an unfinished job of this runner accepted within
        `JOB_DEDUPE_S` (the same idempotency_key, default the request's `Idempotency-Key`
        header; without a key the same kind and request) answers that job instead: a client
        that retries after a timeout does not start the work twice. A direct call (no HTTP
        request, no idempotency_key) always starts a job.
        """
        if not self._accepting or self._running is None:
            raise JobsUnavailableError(f"The {self.service} service is not accepting jobs.")
        waiting = len(self._queued)
        if waiting >= self.settings.job_max_queued and (waiting or self._running.locked()):
            full = JobsFullError(
                f"The {self.service} service already has {len(self._queued)} jobs waiting "
                f"(at most {self.settings.job_max_queued}); retry later."
            )
            full.retry_after_s = max(1, round(self.settings.job_heartbeat_s))
            raise full
        body = request.model_dump(mode="json") if isinstance(request, BaseModel) else request
        data = _strict_json(dict(body or {}), "request")
        key = idempotency_key if idempotency_key is not None else IDEMPOTENCY_KEY.get()
        fingerprint = kind + "\n" + json.dumps(data, sort_keys=True, separators=(",", ":"))
        same = self._same_job(fingerprint, key or None) if key is not None else None
        if same is not None:
            return await self.get(same.id)
        job = _Active(id=uuid.uuid4(), kind=kind, work=work, request=data)
        job.fingerprint, job.key = fingerprint, key or None
        self._active[job.id] = job
        self._by_token[job.task.token] = job
        try:
            async with self.db.session() as session:
                status = await store.insert_job(
                    session,
                    job_id=job.id,
                    kind=kind,
                    service=self.service,
                    request=data,
                    owner=self.owner,
                    now=utcnow(),
                )
                await session.commit()
        except BaseException:
            self._forget(job)
            raise
        self._queued.append(job)
        job.drive = asyncio.create_task(self._drive(job), name=f"job-{kind}-{job.id}")
        return self._with_position(status)

    def _with_position(self, status: JobStatus) -> JobStatus:
        """Return a queued job's status with its place in this runner's queue as message."""
        if status.status != "queued":
            return status
        ids = [job.id for job in self._queued]
        if status.id not in ids:
            return status
        message = (
            f"queued: position {ids.index(status.id) + 1} of {len(ids)} waiting; at most "
            f"{self.settings.job_max_running} {self.service} jobs run at once"
        )
        return status.model_copy(
            update={"progress": status.progress.model_copy(update={"message": message})}
        )

    def max_run_s(self, kind: str) -> float:
        """Return how long a job of this kind may run."""
        s = self.settings
        return s.job_max_run_s_by_kind.get(kind, s.job_max_run_s)

    async def get(self, job_id: uuid.UUID) -> JobStatus:
        """Return the status of one of this service's jobs (JobNotFoundError if none)."""
        async with self.db.session() as session:
            status = await store.load_job(session, job_id=job_id, service=self.service)
        if status is None:
            raise JobNotFoundError(f"No {self.service} job {job_id}.", field="job_id")
        return self._with_position(status)

    async def wait(self, job_id: uuid.UUID, wait_s: float) -> JobStatus:
        """Return a job's status once it has ended, or after wait_s seconds, whichever first."""
        deadline = time.monotonic() + max(0.0, wait_s)
        pause = 0.05
        while True:
            status = await self.get(job_id)
            left = deadline - time.monotonic()
            if status.status not in ("queued", "running") or left <= 0:
                return status
            job = self._active.get(job_id)
            if job is not None:  # ours: wake when it ends, or at the next progress look
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.ended.wait(), timeout=min(left, 1.0))
            else:  # another process runs it: look again shortly
                await asyncio.sleep(min(left, pause))
                pause = min(pause * 2, 1.0)

    async def cancel(self, job_id: uuid.UUID) -> JobStatus:
        """Cancel a queued or running job: it ends `failed` with error code `cancelled`.

        Raises JobNotFoundError for an unknown job and JobFinishedError (409) for one that
        already ended. The work is stopped here when this runner runs it, else by its
        owner's next heartbeat.
        """
        error = JobCancelledError(f"Job {job_id} was cancelled.").to_problem()
        async with self.db.session() as session:
            changed = await store.cancel_job(
                session, job_id=job_id, service=self.service, error=error, now=utcnow()
            )
            await session.commit()
        if not changed:
            status = await self.get(job_id)
            how = status.status + (f": {status.error.code}" if status.error else "")
            raise JobFinishedError(
                f"Job {job_id} already ended ({how}); there is nothing to cancel.",
                field="job_id",
            )
        job = self._active.get(job_id)
        if job is not None:
            self._stop(job, "cancelled")
        return await self.get(job_id)

    async def sweep(self) -> int:
        """Mark this service's unfinished jobs of dead or silent owners interrupted."""
        now = utcnow()
        s = self.settings
        stale = now - timedelta(seconds=max(s.job_stale_after_s, 2 * s.job_heartbeat_s))
        count = 0
        async with self.db.session() as session:
            for job in await store.unfinished_jobs(session, service=self.service):
                why = self._why_dead(job, stale)
                if why is None:
                    continue
                public, detail = why
                error = logged_failure(
                    JobInterruptedError(
                        f"The {self.service} service stopped while job {job.id} was "
                        f"{job.status} ({public}); its work is lost. Submit it again."
                    ),
                    f"{self.service} job {job.id} interrupted: {detail}",
                    traceback=False,
                )
                count += await store.finish_job(
                    session,
                    job_id=job.id,
                    instance=job.owner.instance,
                    status="failed",
                    error=error,
                    now=now,
                )
            await session.commit()
        return count

    # ---- internals -----------------------------------------------------------------------

    def _why_dead(self, job: store.UnfinishedJob, stale: datetime) -> tuple[str, str] | None:
        """Return why a job's owner is dead: (words for the client, details for the log)."""
        owner = job.owner
        where = f"process {owner.pid} on {owner.host}"  # the log's only: no host in an answer
        if owner.instance == self.owner.instance:
            if job.id in self._active or job.id in self._finals:
                return None
            return "this runner lost track of it", "this runner lost track of it"
        if owner.host == self.owner.host:
            if owner.pid == self.owner.pid:
                if owner.instance not in _LIVE_INSTANCES:
                    return "its runner stopped", f"its runner in {where} stopped"
            elif not _pid_alive(owner.pid):
                return "its process is gone", f"{where} is gone"
        if job.heartbeat_at < stale:
            since = job.heartbeat_at.isoformat(timespec="seconds")
            return (
                f"its process has been silent since {since}",
                f"{where} has been silent since {since}",
            )
        return None

    def _task_report(
        self, token: int, key: int, done: float, total: float | None, message: str | None
    ) -> None:
        job = self._by_token.get(token)
        if job is not None and job.ctx is not None and not job.finalized:
            job.ctx.task_report(key, done, total, message)

    def _set_progress(self, job: _Active, progress: JobProgress) -> None:
        if not job.finalized:
            job.progress = progress
            job.dirty.set()

    def _stop(self, job: _Active, reason: str) -> None:
        if job.stop_reason is None:
            job.stop_reason = reason
        job.task.cancel.set()
        if job.drive is not None and not job.drive.done() and not job.finalized:
            job.drive.cancel()

    def _forget(self, job: _Active) -> None:
        job.ended.set()
        self._active.pop(job.id, None)
        self._by_token.pop(job.task.token, None)

    async def _drive(self, job: _Active) -> None:
        """Wait for a slot, run the job, and hold the slot until its tasks have stopped."""
        assert self._running is not None
        slot = False
        try:
            await self._running.acquire()
            slot = True
            self._unqueue(job)
            if await self._claim_when_up(job):
                await self._execute(job)
        except asyncio.CancelledError:
            if job.stop_reason is None:  # the event loop is going away under us
                job.stop_reason = "shutdown"
                with contextlib.suppress(Exception):
                    await self._interrupt(job)
                raise
            if job.stop_reason == "shutdown":
                await self._interrupt(job)
        except Exception:  # the runner's own step failed (e.g. the claim hit a dead DB)
            problem = logged_failure(
                JobFailedError("The job could not run: the service failed internally."),
                f"{self.service} job {job.id} could not run",
            )
            await self._finish(job, _Final("failed", job.progress, error=problem))
        finally:
            self._unqueue(job)
            if job.flusher is not None:
                job.flusher.cancel()
            try:
                if job.stop_reason is not None:
                    await self.executor.cancel(job.task)
                # The slot is free only once the job's tasks have returned: a cancelled
                # search still finishing a chunk keeps its core until it notices.
                grace = self.settings.job_shutdown_grace_s
                await self.executor.until_stopped(
                    job.task, grace if job.stop_reason == "shutdown" else None
                )
                await self.executor.release(job.task)
            finally:
                if slot:
                    self._running.release()
                self._forget(job)

    def _unqueue(self, job: _Active) -> None:
        if job in self._queued:
            self._queued.remove(job)

    async def _claim_when_up(self, job: _Active) -> bool:
        """Claim the job, waiting out a database outage as running jobs do."""
        wait = 0.25
        while True:
            try:
                return await self._claim(job)
            except DatabaseUnavailableError as e:
                log.warning(
                    "%s job %s: database unavailable before it could start (%s); waiting",
                    self.service,
                    job.id,
                    e.detail,
                )
            await asyncio.sleep(wait)
            wait = min(2 * wait, self.settings.job_heartbeat_s)

    async def _claim(self, job: _Active) -> bool:
        async with self.db.session() as session:
            claimed = await store.claim_job(
                session, job_id=job.id, instance=self.owner.instance, now=utcnow()
            )
            await session.commit()
        if claimed:
            job.ctx = JobContext(
                job_id=job.id,
                kind=job.kind,
                request=job.request,
                executor=self.executor,
                task_job=job.task,
                on_report=lambda progress: self._set_progress(job, progress),
            )
            job.flusher = asyncio.create_task(self._flush_progress(job), name="job-progress")
        return claimed

    async def _execute(self, job: _Active) -> None:
        assert job.ctx is not None
        limit_s = self.max_run_s(job.kind)
        deadline = asyncio.timeout(limit_s)
        try:
            try:
                async with deadline:
                    value = await job.work(job.ctx)
            except TimeoutError:
                if not deadline.expired():
                    raise  # the work's own timeout: a failure like any other
                job.stop_reason = "timeout"
                await self.executor.cancel(job.task)
                error = JobRunTimeoutError(
                    f"The job ran longer than the {limit_s:g} s a {job.kind} job may run and "
                    "was stopped. Make it smaller."
                ).to_problem()
                await self._finish(job, _Final("failed", job.progress, error=error))
                return
            if isinstance(value, ResultUrl):
                result, url = None, value.url
            else:
                if isinstance(value, BaseModel):
                    value = value.model_dump(mode="json")
                result, url = _strict_json(value, "result"), None
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this job was stopped (cancel, shutdown): _drive decides what to store
            # a future the work awaited was cancelled under it (e.g. a Dask worker died)
            error = logged_failure(
                JobFailedError("A task of the job was cancelled under it (a worker stopped)."),
                f"{self.service} job {job.id} ({job.kind}): a task was cancelled: {e!r}",
            )
            await self._finish(job, _Final("failed", job.progress, error=error))
            return
        except AppError as e:
            await self._finish(job, _Final("failed", job.progress, error=e.to_problem()))
            return
        except Exception:  # the work's own bug: the job fails, the service lives on
            error = logged_failure(
                JobFailedError("The job failed: the service failed internally."),
                f"{self.service} job {job.id} ({job.kind}) failed",
            )
            await self._finish(job, _Final("failed", job.progress, error=error))
            return
        progress = job.progress
        if progress.total is not None and progress.done < progress.total:
            progress = progress.model_copy(update={"done": progress.total})
        await self._finish(job, _Final("succeeded", progress, result=result, result_url=url))

    async def _interrupt(self, job: _Active) -> None:
        error = JobInterruptedError(
            f"The {self.service} service shut down while job {job.id} was unfinished; its "
            "work is lost. Submit it again."
        ).to_problem()
        await self._finish(job, _Final("failed", job.progress, error=error))

    async def _finish(self, job: _Active, final: _Final) -> None:
        job.finalized = True
        flusher = job.flusher
        if flusher is not None and not flusher.done():
            # No progress write may still be in flight behind the final state's.
            flusher.cancel()
            await asyncio.wait({flusher})
        if not await self._write_final(job.id, final):
            self._finals[job.id] = final

    async def _write_final(self, job_id: uuid.UUID, final: _Final) -> bool:
        try:
            async with self.db.session() as session:
                await store.finish_job(
                    session,
                    job_id=job_id,
                    instance=self.owner.instance,
                    status=final.status,
                    now=utcnow(),
                    progress=final.progress,
                    result=final.result,
                    result_url=final.result_url,
                    error=final.error,
                )
                await session.commit()
        except Exception as e:  # the database is away: the heartbeat retries this write
            final.attempts += 1
            log.warning("%s job %s: final state not stored yet (%s)", self.service, job_id, e)
            # After the last attempt the job is let go: the sweep marks it interrupted.
            return final.attempts >= _FINAL_WRITE_ATTEMPTS
        return True

    async def _retry_finals(self) -> None:
        for job_id, final in list(self._finals.items()):
            if await self._write_final(job_id, final):
                self._finals.pop(job_id, None)

    async def _flush_progress(self, job: _Active) -> None:
        interval = self.settings.job_progress_interval_s
        while True:
            await job.dirty.wait()
            job.dirty.clear()
            progress = job.progress
            try:
                async with self.db.session() as session:
                    ours = await store.write_progress(
                        session,
                        job_id=job.id,
                        instance=self.owner.instance,
                        progress=progress,
                        now=utcnow(),
                    )
                    await session.commit()
            except Exception as e:  # progress is best effort: the next report retries
                log.warning("%s job %s: progress not stored (%s)", self.service, job.id, e)
                ours = True
            if not ours and not job.finalized:
                self._stop(job, "lost")  # cancelled or interrupted elsewhere
                return
            await asyncio.sleep(interval)

    async def _beat(self) -> None:
        started = [job for job in self._active.values() if job.drive is not None]
        async with self.db.session() as session:
            alive = await store.beat(session, instance=self.owner.instance, now=utcnow())
            await session.commit()
        for job in started:
            if not job.finalized and job.id not in alive:
                self._stop(job, "lost")  # cancelled by another instance, or swept
        await self._retry_finals()
        await self.sweep()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_heartbeat_s)
            try:
                await self._beat()
            except Exception as e:  # keep beating through database outages
                log.warning("%s jobs: heartbeat failed (%s)", self.service, e)
