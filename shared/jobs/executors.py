"""Where a job's tasks run: local threads and processes, or a Dask cluster.

`LocalExecutor` runs `where="thread"` tasks on a thread pool (numba kernels that release the
GIL) and `where="process"` tasks on a process pool (work that holds the GIL, e.g. training)
made with the forkserver start method (spawn where there is none), never plain fork from
a threaded asyncio process. The pool is created on the first process task, so a service
that never uses one pays nothing, and ended after `process_idle_s` without one (a training
worker holds ~1 GB of TensorFlow). Its workers die with the service, even on `kill -9`
(`init_process_worker`: parent-death signal and a watchdog). `DaskExecutor` sends every
task to a `distributed` cluster (imported lazily); its workers decide threads or processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.errors import ServiceUnavailableError
from shared.jobs.tasks import (
    REPORT_INTERVAL_S,
    ReportSink,
    _Throttle,
    dask_live_event_name,
    distributed,
    init_process_worker,
    run_in_process,
    run_on_dask,
    run_with_channel,
)

log = logging.getLogger(__name__)

Where = Literal["thread", "process"]
# Cancel slots shared with process workers: one per job using processes at the same time.
PROCESS_SLOTS = 1024


@dataclass(eq=False)
class TaskJob:
    """What an executor knows of a job: the token its tasks carry and its cancel flag."""

    token: int = field(default_factory=lambda: secrets.randbits(62) + 1)
    cancel: threading.Event = field(default_factory=threading.Event)
    slot: int | None = None
    # local tasks not yet returned (their pool futures): the job's slot waits for them
    live: set[Future[Any]] = field(default_factory=set)


class Executor(Protocol):
    """Runs a job's tasks; the runner and JobContext only talk to this."""

    async def capacity(self, where: Where) -> int:
        """Return how many tasks of this kind run at once."""

    async def submit(
        self, job: TaskJob, key: int, fn: Callable[..., Any], args: tuple[Any, ...], where: Where
    ) -> asyncio.Future[Any]:
        """Start fn(*args) as task key of job; return a future of its result."""

    async def cancel(self, job: TaskJob) -> None:
        """Tell job's running tasks to stop (`task_cancelled()` turns True)."""

    async def release(self, job: TaskJob) -> None:
        """Forget job (it ended); its leftover tasks see themselves cancelled."""

    async def until_stopped(self, job: TaskJob, timeout_s: float | None) -> None:
        """Wait until none of job's tasks is running here (at most timeout_s; None: no bound)."""

    async def aclose(self, grace_s: float) -> None:
        """Stop every worker; wait at most grace_s for running tasks, then terminate."""


class _ThreadChannel:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, sink: ReportSink, job: TaskJob, key: int
    ) -> None:
        self.loop, self.sink, self.job, self.key = loop, sink, job, key
        self.throttle = _Throttle(REPORT_INTERVAL_S)

    def report(self, done: float, total: float | None, message: str | None) -> None:
        if self.throttle.allows(done, total):
            # RuntimeError: the loop closed under a task still running
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(
                    self.sink, self.job.token, self.key, done, total, message
                )

    def cancelled(self) -> bool:
        return self.job.cancel.is_set()


def _start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class LocalExecutor:
    """A thread pool, and a process pool made on first use."""

    def __init__(
        self, *, threads: int, processes: int, sink: ReportSink, process_idle_s: float = 0.0
    ) -> None:
        self.threads = threads
        self.processes = processes
        self.process_idle_s = process_idle_s
        self._sink = sink
        self._in_flight = 0  # process tasks submitted and not finished
        self._idle_timer: asyncio.TimerHandle | None = None
        self._thread_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job")
        self._pool: ProcessPoolExecutor | None = None
        self._reports: Any = None
        self._slots: Any = None
        self._free = list(range(PROCESS_SLOTS - 1, -1, -1))
        self._pump: threading.Thread | None = None

    async def capacity(self, where: Where) -> int:
        """Return the worker count of the pool for where."""
        return self.threads if where == "thread" else self.processes

    async def submit(
        self, job: TaskJob, key: int, fn: Callable[..., Any], args: tuple[Any, ...], where: Where
    ) -> asyncio.Future[Any]:
        """Run fn(*args) on the thread or process pool."""
        loop = asyncio.get_running_loop()
        if where == "thread":
            channel = _ThreadChannel(loop, self._sink, job, key)
            future = self._thread_pool.submit(run_with_channel, channel, fn, args)
            return self._track(job, future, loop)
        if where != "process":
            raise ValueError(f"where must be 'thread' or 'process', not {where!r}")
        try:
            pool = self._process_pool(loop)
            slot = self._slot_of(job)
            future = pool.submit(run_in_process, job.token, slot, key, fn, args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start a new pool
            log.warning("job process pool broken; starting a new one")
            self._drop_pool()
            future = self._process_pool(loop).submit(run_in_process, job.token, slot, key, fn, args)
        self._in_flight += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        # The worker's own end of the task (not the awaiting coroutine's, which a cancel ends
        # early): only then is the pool idle.
        future.add_done_callback(lambda _: _call_soon(loop, self._process_task_done, loop))
        return self._track(job, future, loop)

    def _process_task_done(self, loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self.process_idle_s > 0 and self._pool is not None:
            self._idle_timer = loop.call_later(self.process_idle_s, self._retire_idle_pool)

    def _retire_idle_pool(self) -> None:
        """End the worker processes after process_idle_s without a task (a training worker
        holds ~1 GB of TensorFlow); the next process task starts a new pool."""
        self._idle_timer = None
        if self._in_flight == 0 and self._pool is not None:
            log.info("job process pool idle for %.0f s: its workers exit", self.process_idle_s)
            self._drop_pool()

    @staticmethod
    def _track(
        job: TaskJob, future: Future[Any], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        """Keep future among job's live tasks until it has returned; wrap it for asyncio."""
        job.live.add(future)
        future.add_done_callback(job.live.discard)
        return asyncio.wrap_future(future, loop=loop)

    async def until_stopped(self, job: TaskJob, timeout_s: float | None) -> None:
        """Wait until every task of job has returned (or never started), at most timeout_s."""
        live = [asyncio.wrap_future(f) for f in list(job.live) if not f.done()]
        if not live:
            return
        done, pending = await asyncio.wait(live, timeout=timeout_s)
        for waiter in done:  # the task's outcome was the job's business, not this wait's
            if not waiter.cancelled():
                waiter.exception()
        if pending:
            log.warning(
                "%d task(s) of a stopped job still running after %s s", len(pending), timeout_s
            )

    async def cancel(self, job: TaskJob) -> None:
        """Set the job's cancel flag for its thread and process tasks."""
        job.cancel.set()
        if job.slot is not None and self._slots is not None:
            self._slots[job.slot] = 0

    async def release(self, job: TaskJob) -> None:
        """Free the job's process slot (its leftover tasks then read themselves cancelled)."""
        job.cancel.set()
        if job.slot is not None:
            if self._slots is not None:
                self._slots[job.slot] = 0
            self._free.append(job.slot)
            job.slot = None

    def _slot_of(self, job: TaskJob) -> int:
        if job.slot is None:
            if not self._free:
                raise ServiceUnavailableError("Too many jobs use worker processes at once.")
            job.slot = self._free.pop()
            self._slots[job.slot] = 0 if job.cancel.is_set() else job.token
        return job.slot

    def _process_pool(self, loop: asyncio.AbstractEventLoop) -> ProcessPoolExecutor:
        if self._pool is not None:
            return self._pool
        ctx = multiprocessing.get_context(_start_method())
        if self._reports is None:
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(["shared.jobs.tasks"])
            self._reports = ctx.SimpleQueue()
            self._slots = ctx.RawArray("q", PROCESS_SLOTS)
            self._pump = threading.Thread(
                target=self._pump_reports, args=(loop,), name="job-reports", daemon=True
            )
            self._pump.start()
        self._pool = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=ctx,
            initializer=init_process_worker,
            initargs=(self._reports, self._slots, os.getpid()),
        )
        log.info("job process pool: %d %s workers", self.processes, ctx.get_start_method())
        return self._pool

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _pump_reports(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            item = self._reports.get()
            if item is None:
                return
            try:
                loop.call_soon_threadsafe(self._sink, *item)
            except RuntimeError:  # the event loop is closed
                return

    async def aclose(self, grace_s: float) -> None:
        """Stop both pools; terminate worker processes still busy after grace_s."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._thread_pool.shutdown(wait=False, cancel_futures=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            for job_slot in range(PROCESS_SLOTS):
                self._slots[job_slot] = 0
            # The pool's worker processes (a private attribute; Python 3.14 adds
            # terminate_workers()): a task that ignores cancellation is ended after grace_s.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + grace_s
            for process in processes:
                await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    log.warning("job worker process %s still busy; terminating it", process.pid)
                    process.terminate()
                    await asyncio.to_thread(process.join, 5)
            await asyncio.to_thread(pool.shutdown, wait=True)
        if self._pump is not None:
            self._reports.put(None)
            await asyncio.to_thread(self._pump.join, 5)
            self._pump = None
        await asyncio.to_thread(_join_threads, self._thread_pool, grace_s)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Call fn(*args) on loop from any thread (nothing when the loop has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _join_threads(pool: ThreadPoolExecutor, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("job thread %s still busy after %.0f s", thread.name, grace_s)


class DaskExecutor:
    """Every task of every job on a Dask cluster; progress comes back as scheduler events."""

    def __init__(self, address: str, *, sink: ReportSink, instance: str) -> None:
        self.address = address
        self.topic = f"shared-jobs-progress-{instance}"
        self._sink = sink
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._live: set[int] = set()

    async def _connect(self) -> Any:
        async with self._lock:
            if self._client is None:
                try:
                    client = await distributed().Client(
                        self.address, asynchronous=True, timeout=10, set_as_default=False
                    )
                except (OSError, TimeoutError) as e:
                    raise ServiceUnavailableError(
                        f"The Dask scheduler at {self.address} is unreachable "
                        f"({type(e).__name__}: {e})."
                    ) from e
                client.subscribe_topic(self.topic, self._on_event)
                self._client = client
                log.info("job tasks go to the Dask scheduler at %s", self.address)
        return self._client

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        self._sink(msg["token"], msg["key"], msg["done"], msg["total"], msg["message"])

    async def capacity(self, where: Where) -> int:
        """Return the cluster's thread count (what it runs at once)."""
        client = await self._connect()
        workers = client.scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    async def submit(
        self, job: TaskJob, key: int, fn: Callable[..., Any], args: tuple[Any, ...], where: Where
    ) -> asyncio.Future[Any]:
        """Send fn(*args) to the cluster (where is the workers' business there)."""
        client = await self._connect()
        if job.token not in self._live and not job.cancel.is_set():
            await self._event(job).set()  # tasks run while it is set
            self._live.add(job.token)
        name = getattr(fn, "__name__", "task")
        future = client.submit(
            run_on_dask, self.topic, job.token, key, fn, args, key=f"{name}-{uuid.uuid4().hex}"
        )
        return asyncio.ensure_future(_await_dask(client, future))

    def _event(self, job: TaskJob) -> Any:
        return distributed().Event(dask_live_event_name(job.token), client=self._client)

    async def cancel(self, job: TaskJob) -> None:
        """Clear the job's event on the scheduler: its tasks read themselves cancelled."""
        job.cancel.set()
        if self._client is not None and job.token in self._live:
            self._live.discard(job.token)
            await self._event(job).clear()  # a cleared event is dropped by the scheduler

    async def release(self, job: TaskJob) -> None:
        """Forget the job; its leftover tasks read themselves cancelled."""
        await self.cancel(job)

    async def until_stopped(self, job: TaskJob, timeout_s: float | None) -> None:
        """Return at once: the cluster's workers stop cancelled tasks on their own."""

    async def aclose(self, grace_s: float) -> None:
        """Close the client (the cluster itself is not ours)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close(timeout=grace_s)


async def _await_dask(client: Any, future: Any) -> Any:
    try:
        return await future
    except asyncio.CancelledError:
        await client.cancel([future])
        raise
