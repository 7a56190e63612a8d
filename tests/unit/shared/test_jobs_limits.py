"""The job runner's limits: slots held until work stops, a queue cap, a run-time limit per
kind, queue positions in progress, and queued jobs that wait out a database outage."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared.errors import DatabaseUnavailableError
from shared.jobs import JobContext, JobRunner, JobStatus, cancel_path, task_cancelled
from shared.jobs.errors import JobsFullError
from tests.unit.shared.conftest import exists, finished, running, until
from tests.unit.shared.job_app import spin

SAFETY_S = 60.0  # a bound on every loop below, never an assertion about speed


def stubborn(gate: str, noticed: str) -> str:
    """Spin until cancelled, then keep the core until gate exists (a chunk being finished)."""
    start = time.monotonic()
    while not task_cancelled() and time.monotonic() - start < SAFETY_S:
        time.sleep(0.01)
    Path(noticed).touch()
    while not Path(gate).exists() and time.monotonic() - start < SAFETY_S:
        time.sleep(0.01)
    return "stopped"


async def _stubborn(gate: Path, noticed: Path, ctx: JobContext) -> Any:
    return await ctx.run(stubborn, str(gate), str(noticed))


async def _spin(marker: Path | None, ctx: JobContext) -> Any:
    return await ctx.run(spin, SAFETY_S, str(marker) if marker else None)


async def _quick(ctx: JobContext) -> str:
    return "ok"


async def _status(runner: JobRunner, job: JobStatus) -> str:
    return (await runner.get(job.id)).status


def test_a_cancelled_jobs_slot_is_freed_only_when_its_task_has_returned(tmp_path: Path) -> None:
    gate, noticed = tmp_path / "gate", tmp_path / "noticed"

    async def go() -> tuple[JobStatus, str, JobStatus]:
        async with running(tmp_path, job_max_running=1) as runner:
            first = await runner.submit("search", {}, partial(_stubborn, gate, noticed))

            async def first_running() -> bool:
                return await _status(runner, first) == "running"

            await until(first_running, "the first job to run")
            cancelled = await runner.cancel(first.id)
            await until(lambda: exists(noticed), "the task to notice the cancel")
            second = await runner.submit("quick", {}, _quick)
            await asyncio.sleep(0.2)  # were the slot free, the second job would run now
            while_finishing = await _status(runner, second)
            gate.touch()  # the cancelled task returns
            return cancelled, while_finishing, await finished(runner, second)

    cancelled, while_finishing, second = asyncio.run(go())
    assert cancelled.status == "failed" and cancelled.error is not None
    assert cancelled.error.code == "cancelled"
    assert while_finishing == "queued"
    assert second.status == "succeeded" and second.result == "ok"


def test_jobs_beyond_the_queue_cap_are_refused_with_retry_after(tmp_path: Path) -> None:
    async def go() -> tuple[list[JobStatus], JobsFullError]:
        async with running(tmp_path, job_max_running=1, job_max_queued=2) as runner:
            first = await runner.submit("spin", {}, partial(_spin, None))

            async def first_running() -> bool:
                return await _status(runner, first) == "running"

            await until(first_running, "the first job to run")
            waiting = [await runner.submit("quick", {}, _quick) for _ in range(2)]
            with pytest.raises(JobsFullError) as refused:
                await runner.submit("quick", {}, _quick)
            statuses = [await runner.get(j.id) for j in waiting]
            await runner.cancel(first.id)
            return statuses, refused.value

    waiting, refused = asyncio.run(go())
    assert refused.status == 503 and refused.code == "jobs_full"
    assert refused.retry_after_s is not None and refused.retry_after_s >= 1
    messages = [w.progress.message for w in waiting]
    assert [w.status for w in waiting] == ["queued", "queued"]
    assert messages[0] is not None and messages[0].startswith("queued: position 1 of 2")
    assert messages[1] is not None and messages[1].startswith("queued: position 2 of 2")


def test_a_job_past_its_kinds_run_time_ends_failed_timeout_and_its_task_stops(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "stopped"

    async def go() -> tuple[JobStatus, JobStatus]:
        limits = {"spin": 0.3}
        async with running(tmp_path, job_max_run_s_by_kind=limits) as runner:
            timed = await runner.submit("spin", {}, partial(_spin, marker))
            other = await runner.submit("quick", {}, _quick)  # another kind: the default limit
            status = await finished(runner, timed)
            await until(lambda: exists(marker), "the task to be told to stop")
            return status, await finished(runner, other)

    timed, other = asyncio.run(go())
    assert timed.status == "failed" and timed.error is not None
    assert timed.error.code == "timeout" and "0.3 s" in timed.error.detail
    assert marker.read_text().startswith("stopped after ")
    assert other.status == "succeeded"


def test_a_queued_job_waits_out_a_database_outage_and_then_runs(tmp_path: Path) -> None:
    async def go() -> JobStatus:
        async with running(tmp_path, job_max_running=1, job_heartbeat_s=0.2) as runner:
            release = asyncio.Event()

            async def hold(ctx: JobContext) -> str:
                await release.wait()
                return "held"

            first = await runner.submit("hold", {}, hold)

            async def first_running() -> bool:
                return await _status(runner, first) == "running"

            await until(first_running, "the first job to run")
            queued = await runner.submit("quick", {}, _quick)
            runner.db.breaker.failure(fatal=True)  # the database is away for a cool-down
            release.set()  # the slot comes free during the outage: the queued job's turn

            async def ended() -> bool:
                try:
                    return await _status(runner, queued) in ("succeeded", "failed")
                except DatabaseUnavailableError:  # the outage lasts the breaker's cool-down
                    return False

            await until(ended, "the queued job to end")
            return await runner.get(queued.id)

    status = asyncio.run(go())
    assert status.status == "succeeded", status.error
    assert status.result == "ok"


def test_a_full_queue_answers_503_with_retry_after_over_http(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.unit.shared.job_app import create_app, job_settings

    settings = job_settings(tmp_path, job_max_running=1, job_max_queued=0)
    with TestClient(create_app(settings)) as client:
        first = client.post("/spins", json={"limit_s": SAFETY_S})
        refused = client.post("/spins", json={"limit_s": SAFETY_S})
        client.post(cancel_path(first.headers["location"]))

    assert first.status_code == 202
    assert refused.status_code == 503 and refused.json()["code"] == "jobs_full"
    assert int(refused.headers["retry-after"]) >= 1
