"""Job worker processes end: with their service (even on kill -9), and when idle.

A training worker holds ~1 GB of TensorFlow and two cores' worth of work: one left behind by
a killed server trains on for minutes for a job already marked interrupted, and one kept
after its training holds the memory for nothing. Bounds below are generous: they wait for an
end, they do not time it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shared.jobs.executors import LocalExecutor, TaskJob
from tests.unit.shared.job_app import pid_of

ROOT = Path(__file__).resolve().parents[3]

SERVER = """
import asyncio, sys
from shared.jobs.executors import LocalExecutor, TaskJob
from tests.unit.shared.job_app import hold

async def main() -> None:
    executor = LocalExecutor(threads=1, processes=1, sink=lambda *a: None)
    await executor.submit(TaskJob(), 0, hold, (sys.argv[1], 300.0), "process")
    await asyncio.sleep(600)  # "serving" until killed

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    """Return True while pid runs (a zombie waiting to be reaped counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: object, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_a_worker_dies_with_its_killed_service(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    server = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER), str(pid_file)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    worker = None
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), 120), (
            "the worker never started its task"
        )
        worker = int(pid_file.read_text())
        assert worker != server.pid and alive(worker)
        server.send_signal(signal.SIGKILL)  # no shutdown code runs in the server
        server.wait(30)
        # The task ignores cancellation and would run 300 s: only its death ends it here.
        assert wait_until(lambda: not alive(worker), 60), "the worker outlived its server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
        if worker is not None and alive(worker):  # today's behaviour: leave nothing behind
            os.kill(worker, signal.SIGKILL)


def test_idle_workers_exit_and_the_next_task_starts_new_ones() -> None:
    async def go() -> tuple[int, bool, int]:
        executor = LocalExecutor(threads=1, processes=1, sink=lambda *a: None, process_idle_s=0.5)
        try:
            first = await (await executor.submit(TaskJob(), 0, pid_of, (1,), "process"))
            ended = await asyncio.to_thread(wait_until, lambda: not alive(first), 60)
            second = await (await executor.submit(TaskJob(), 0, pid_of, (2,), "process"))
            return first, ended, second
        finally:
            await executor.aclose(5)

    first, ended, second = asyncio.run(go())
    assert ended, "an idle worker process stayed"
    assert second != first and second != os.getpid()


def test_busy_workers_are_kept_until_idle() -> None:
    async def go() -> tuple[int, int]:
        executor = LocalExecutor(threads=1, processes=1, sink=lambda *a: None, process_idle_s=0.5)
        try:
            job = TaskJob()
            first = await (await executor.submit(job, 0, pid_of, (1,), "process"))
            for key in range(1, 4):  # back to back, each within the idle time of the last
                last = await (await executor.submit(job, key, pid_of, (key,), "process"))
            return first, last
        finally:
            await executor.aclose(5)

    first, last = asyncio.run(go())
    assert first == last  # one worker served them all
