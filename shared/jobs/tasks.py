"""Inside a job's task: report sub-progress and notice cancellation, wherever the task runs.

A task is a plain function that `JobContext.run`/`map` sends to a thread, a worker process
or a Dask worker. It may call `task_report(done, total, message)` (e.g. once per training
epoch) and `task_cancelled()` (return early or raise when it says True). Both are no-ops
outside a job, so the same function runs unchanged in tests, a CLI or a notebook.

How the calls travel: a thread task calls back into the event loop; a process task writes
to a pipe the parent reads, and reads its cancel flag from shared memory (one slot per
running job); a Dask task logs a scheduler event the runner subscribes to, and checks the
job's `distributed.Event`, set while the job runs and cleared on cancel or end. Reports
are throttled at the source (`REPORT_INTERVAL_S`).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

REPORT_INTERVAL_S = 0.05
CANCEL_CHECK_INTERVAL_S = 0.5

# (token, key, done, total, message): a task's report, routed to its job by token.
Report = tuple[int, int, float, float | None, str | None]
ReportSink = Callable[[int, int, float, float | None, str | None], None]


class TaskChannel(Protocol):
    """Where a running task's reports go and where its cancel flag is read."""

    def report(self, done: float, total: float | None, message: str | None) -> None:
        """Send one progress report of the task."""

    def cancelled(self) -> bool:
        """Return True once the task's job was cancelled or ended."""


_current: ContextVar[TaskChannel | None] = ContextVar("shared_jobs_task", default=None)


def task_report(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report this task's own progress (e.g. epochs); does nothing outside a job task."""
    channel = _current.get()
    if channel is not None:
        channel.report(float(done), None if total is None else float(total), message)


def task_cancelled() -> bool:
    """Return True when this task's job was cancelled (False outside a job task)."""
    channel = _current.get()
    return channel is not None and channel.cancelled()


def run_with_channel(channel: TaskChannel, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Call fn(*args) with channel as the current task channel."""
    reset = _current.set(channel)
    try:
        return fn(*args)
    finally:
        _current.reset(reset)


class _Throttle:
    """Pass the first report, the final one (done >= total), and one per interval."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = -float("inf")

    def allows(self, done: float, total: float | None) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval_s or (total is not None and done >= total):
            self.last = now
            return True
        return False


# ---- process workers -------------------------------------------------------------------

_process_channel: tuple[Any, Any] | None = None  # (SimpleQueue of Report, RawArray of tokens)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 1.0


def init_process_worker(reports: Any, slots: Any, owner_pid: int | None = None) -> None:
    """Process-pool initializer: keep the report pipe and cancel slots; die with the owner.

    owner_pid is the service process that made the pool. A worker must not outlive it (a
    `kill -9` of the server left a training worker running for minutes, its job already
    marked interrupted): on Linux the kernel sends SIGKILL when the worker's parent dies
    (``prctl(PR_SET_PDEATHSIG)``; the parent is the forkserver, which exits with the owner),
    and a watchdog thread checks every second that the owner is alive and the parent unchanged
    (every platform; it also covers an owner that died before prctl ran).
    """
    global _process_channel
    _process_channel = (reports, slots)
    if owner_pid is not None:
        die_with_parent(owner_pid)


def die_with_parent(owner_pid: int) -> None:
    """Make this process end when owner_pid (or this process's parent) ends."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog alone
            pass
    threading.Thread(
        target=_watch_owner, args=(owner_pid, parent), name="job-owner-watchdog", daemon=True
    ).start()


def _owner_gone(owner_pid: int, parent: int) -> bool:
    if os.getppid() != parent:  # the parent died: this process was adopted
        return True
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's (cannot be ours, but is alive)
        return False
    return False


def _watch_owner(owner_pid: int, parent: int) -> None:
    while not _owner_gone(owner_pid, parent):
        time.sleep(WATCHDOG_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGKILL)  # nothing to report to: stop at once


class _ProcessChannel:
    def __init__(self, token: int, slot: int, key: int) -> None:
        assert _process_channel is not None, "not a job worker process"
        self.reports, self.slots = _process_channel
        self.token, self.slot, self.key = token, slot, key
        self.throttle = _Throttle(REPORT_INTERVAL_S)

    def report(self, done: float, total: float | None, message: str | None) -> None:
        if self.throttle.allows(done, total):
            self.reports.put((self.token, self.key, done, total, message))

    def cancelled(self) -> bool:
        return bool(self.slots[self.slot] != self.token)


def run_in_process(
    token: int, slot: int, key: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    """Run one job task in a pool worker process (the pool's entry point)."""
    return run_with_channel(_ProcessChannel(token, slot, key), fn, args)


# ---- Dask workers ----------------------------------------------------------------------


def distributed() -> Any:
    """Import and return the `distributed` package (only where Dask is used)."""
    return importlib.import_module("distributed")


def dask_live_event_name(token: int) -> str:
    """Return the name of the `distributed.Event` that is set while a job runs on Dask."""
    return f"shared-jobs-live-{token}"


class _DaskChannel:
    def __init__(self, topic: str, token: int, key: int) -> None:
        self.topic, self.token, self.key = topic, token, key
        self.throttle = _Throttle(REPORT_INTERVAL_S)
        self.checked = -float("inf")
        self.stop = False

    def report(self, done: float, total: float | None, message: str | None) -> None:
        if self.throttle.allows(done, total):
            msg: dict[str, Any] = {"token": self.token, "key": self.key, "done": done}
            msg.update({"total": total, "message": message})
            distributed().get_worker().log_event(self.topic, msg)

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self.stop and now - self.checked >= CANCEL_CHECK_INTERVAL_S:
            self.checked = now
            event = distributed().Event(dask_live_event_name(self.token))
            self.stop = not event.is_set()
        return self.stop


def run_on_dask(
    topic: str, token: int, key: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    """Run one job task on a Dask worker (the cluster's entry point)."""
    return run_with_channel(_DaskChannel(topic, token, key), fn, args)
