"""The job runner on a real (SQLite) database: progress, cancel, limits, sweeps, errors."""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import JobContext, JobFinishedError, JobNotFoundError, JobRunner, JobStatus, store
from shared.tables import utcnow
from tests.unit.shared.conftest import exists, finished, record_progress_writes, running, until
from tests.unit.shared.job_app import SERVICE, simulate_path, slow_square, spin, train, train_gated


async def _spin(marker: Path, ctx: JobContext) -> Any:
    return await ctx.run(spin, 60.0, str(marker))


async def _running(runner: JobRunner, job: JobStatus) -> bool:
    status = await runner.get(job.id)
    return status.status == "running" and status.progress.done > 0


def test_map_runs_tasks_in_threads_and_reports_per_finished_task(tmp_path: Path) -> None:
    async def go() -> tuple[JobStatus, list[dict[str, Any]]]:
        async with running(tmp_path) as runner:
            writes = record_progress_writes(runner.db)

            async def work(ctx: JobContext) -> dict[str, Any]:
                squares = await ctx.map(slow_square, range(6), what="squares")
                return {"squares": squares}

            job = await runner.submit("squares", {"n": 6}, work)
            assert job.status == "queued" and job.request == {"n": 6}
            return await finished(runner, job), writes

    status, writes = asyncio.run(go())
    assert status.status == "succeeded"
    assert status.result == {"squares": [0, 1, 4, 9, 16, 25]}
    assert status.progress.model_dump() == {
        "done": 6.0,
        "total": 6.0,
        "message": "6 of 6 squares done",
    }
    assert status.started_at is not None and status.finished_at is not None
    assert status.created_at <= status.started_at <= status.finished_at
    done = [w["progress_done"] for w in writes]
    assert done == sorted(done) and done[-1] == 6.0
    assert all(w["progress_total"] == 6.0 for w in writes)


def test_a_process_task_reports_every_epoch_to_the_database(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()

    async def go() -> tuple[JobStatus, list[dict[str, Any]]]:
        async with running(tmp_path) as runner:
            writes = record_progress_writes(runner.db)

            async def work(ctx: JobContext) -> Any:
                task = asyncio.ensure_future(ctx.run(train_gated, 3, str(gate), where="process"))
                for epoch in range(1, 4):

                    async def stored(epoch: int = epoch) -> bool:
                        message = (await runner.get(ctx.job_id)).progress.message
                        return message == f"epoch {epoch}/3" or task.done()

                    await until(stored, f"epoch {epoch} in the database")
                    (gate / str(epoch)).touch()
                return await task

            job = await runner.submit("training", {}, work)
            return await finished(runner, job), writes

    status, writes = asyncio.run(go())
    assert status.status == "succeeded", status.error
    assert status.result["epochs"] == 3
    assert status.result["pid"] != os.getpid()  # it ran in a worker process
    messages = [w["progress_message"] for w in writes if "status" not in w]
    assert [m for m in messages if m.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert status.progress.done == 3.0 and status.progress.total == 3.0


def test_progress_writes_are_throttled(tmp_path: Path) -> None:
    async def go() -> tuple[JobStatus, list[dict[str, Any]]]:
        async with running(tmp_path, job_progress_interval_s=60.0) as runner:
            writes = record_progress_writes(runner.db)

            async def work(ctx: JobContext) -> int:
                for i in range(1000):
                    ctx.report(i, 1000, f"item {i}")
                await asyncio.sleep(0.05)  # the first write happens now
                for i in range(1000):
                    ctx.report(1000 + i, 2000, f"item {1000 + i}")
                await asyncio.sleep(0.05)  # within the interval: no second write
                return 1

            job = await runner.submit("reports", {}, work)
            return await finished(runner, job), writes

    status, writes = asyncio.run(go())
    progress_only = [w for w in writes if "status" not in w]
    assert [w["progress_message"] for w in progress_only] == ["item 999"]
    final = [w for w in writes if "status" in w]
    assert len(final) == 1 and final[0]["progress_message"] == "item 1999"
    assert status.progress.done == 2000.0  # done = total on success


def test_cancel_stops_a_thread_task_and_nothing_is_written_after(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"

    async def go() -> tuple[JobStatus, JobStatus, JobStatus]:
        async with running(tmp_path) as runner:
            job = await runner.submit("spin", {}, partial(_spin, marker))
            await until(lambda: _running(runner, job), "the spin to run")
            cancelled = await runner.cancel(job.id)
            await until(lambda: exists(marker), "the task to notice the cancel")
            await asyncio.sleep(0.1)  # any late write would land now
            later = await runner.get(job.id)
            with pytest.raises(JobFinishedError) as again:
                await runner.cancel(job.id)
            assert "already ended (failed: cancelled)" in again.value.detail
        return cancelled, later, job

    cancelled, later, _ = asyncio.run(go())
    assert cancelled.status == "failed"
    assert cancelled.error is not None and cancelled.error.code == "cancelled"
    assert cancelled.error.status == 409
    assert marker.read_text().startswith("stopped after ")
    assert later.status == "failed" and later.result is None and later.result_url is None
    assert later.error == cancelled.error and later.finished_at == cancelled.finished_at


def test_cancel_stops_a_process_task(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"

    async def go() -> JobStatus:
        async with running(tmp_path) as runner:

            async def work(ctx: JobContext) -> Any:
                return await ctx.run(train, 100_000, str(marker), where="process")

            job = await runner.submit("training", {}, work)

            async def epochs_running() -> bool:
                message = (await runner.get(job.id)).progress.message or ""
                return message.startswith("epoch ")

            await until(epochs_running, "the training to report an epoch")
            await runner.cancel(job.id)
            await until(lambda: exists(marker), "the worker process to notice the cancel")
            return await runner.get(job.id)

    status = asyncio.run(go())
    assert status.status == "failed" and status.error is not None
    assert status.error.code == "cancelled" and status.result is None
    epochs = int(marker.read_text().split()[2])
    assert 1 <= epochs < 100_000


def test_at_most_job_max_running_run_the_rest_stay_queued(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"

    async def go() -> tuple[JobStatus, JobStatus, JobStatus]:
        async with running(tmp_path, job_max_running=1) as runner:
            first = await runner.submit("spin", {}, partial(_spin, marker))
            await until(lambda: _running(runner, first), "the first job to run")

            async def quick(ctx: JobContext) -> str:
                return "ok"

            second = await runner.submit("quick", {}, quick)
            third = await runner.submit("quick", {}, quick)
            await asyncio.sleep(0.1)  # were the limit broken, they would start now
            second_waiting = await runner.get(second.id)
            third_cancelled = await runner.cancel(third.id)
            await runner.cancel(first.id)
            return second_waiting, third_cancelled, await finished(runner, second)

    waiting, third_cancelled, second_done = asyncio.run(go())
    assert waiting.status == "queued" and waiting.started_at is None
    assert third_cancelled.status == "failed" and third_cancelled.error is not None
    assert third_cancelled.error.code == "cancelled" and third_cancelled.started_at is None
    assert second_done.status == "succeeded" and second_done.result == "ok"


def test_failures_are_problems(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> list[JobStatus]:
        async with running(tmp_path) as runner:

            async def bug(ctx: JobContext) -> Any:
                return 1 / 0

            async def not_json(ctx: JobContext) -> Any:
                return {"sharpe": math.nan}

            async def model(ctx: JobContext) -> Any:
                return JobStatus.model_validate(
                    {"id": ctx.job_id, "kind": "x", "status": "queued"}
                    | {"created_at": utcnow(), "updated_at": utcnow()}
                )

            async def inner_cancel(ctx: JobContext) -> Any:
                future = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(future.cancel)  # not the job's own task
                return await future

            works = [("b", bug), ("n", not_json), ("m", model), ("c", inner_cancel)]
            jobs = [await runner.submit(kind, {}, work) for kind, work in works]
            return [await finished(runner, job) for job in jobs]

    bug, not_json, model, inner = asyncio.run(go())
    assert bug.status == "failed" and bug.error is not None
    assert bug.error.code == "job_failed" and bug.error.status == 500
    # the answer names no exception, host or pid: those are logged under the answer's id
    assert "ZeroDivisionError" not in bug.error.detail and "division" not in bug.error.detail
    assert bug.error.error_id is not None
    logged = [r for r in caplog.records if f"error_id={bug.error.error_id}" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "ZeroDivisionError: division by zero" in caplog.text
    assert not_json.status == "failed" and not_json.error is not None
    assert not_json.error.code == "validation_error" and not_json.error.field == "result"
    assert model.status == "succeeded" and model.result["status"] == "queued"
    assert inner.status == "failed" and inner.error is not None
    assert inner.error.code == "job_failed" and "was cancelled" in inner.error.detail


def test_unknown_jobs_and_bad_requests(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(tmp_path) as runner:

            async def work(ctx: JobContext) -> None:
                return None

            with pytest.raises(JobNotFoundError):
                await runner.get(uuid.uuid4())
            with pytest.raises(JobNotFoundError):
                await runner.cancel(uuid.uuid4())
            with pytest.raises(Exception, match="request is not JSON") as bad:
                await runner.submit("x", {"when": float("inf")}, work)
            assert getattr(bad.value, "status", None) == 422

    asyncio.run(go())


def test_a_service_sees_and_sweeps_only_its_own_jobs(tmp_path: Path) -> None:
    async def go() -> tuple[JobStatus, Exception | None]:
        async with (
            running(tmp_path, service="backtest") as backtest,
            running(tmp_path, service="predictor") as predictor,
        ):

            async def work(ctx: JobContext) -> str:
                return "mine"

            job = await backtest.submit("x", {}, work)
            try:
                await predictor.get(job.id)
                error = None
            except JobNotFoundError as e:
                error = e
            return await finished(backtest, job), error

    status, error = asyncio.run(go())
    assert status.result == "mine"
    assert isinstance(error, JobNotFoundError)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def _insert(
    runner: JobRunner, owner: store.Owner, *, service: str = SERVICE, age_s: float = 0.0
) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with runner.db.session() as session:
        await store.insert_job(
            session,
            job_id=job_id,
            kind="left",
            service=service,
            request={},
            owner=owner,
            now=utcnow() - timedelta(seconds=age_s),
        )
        await session.commit()
    return job_id


def test_the_sweep_interrupts_jobs_of_dead_or_silent_owners_only(tmp_path: Path) -> None:
    async def go() -> dict[str, JobStatus]:
        async with running(tmp_path, job_stale_after_s=60.0) as setup:
            me = setup.owner
            here = me.host
            ids = {
                "dead_pid": await _insert(setup, store.Owner(here, _dead_pid(), "a" * 32)),
                "stopped_runner_here": await _insert(setup, store.Owner(here, me.pid, "b" * 32)),
                "silent_host": await _insert(
                    setup, store.Owner("elsewhere", 1, "c" * 32), age_s=600
                ),
                "live_host": await _insert(setup, store.Owner("elsewhere", 1, "d" * 32)),
                "other_pid_namespace": await _insert(  # a container sharing our hostname
                    setup, store.Owner(f"{here.split('/')[0]}/pid:[1]", _dead_pid(), "f" * 32)
                ),
                "live_runner_here": await _insert(setup, me),
                "other_service": await _insert(
                    setup, store.Owner(here, _dead_pid(), "e" * 32), service="predictor"
                ),
            }
            async with running(tmp_path, job_stale_after_s=60.0) as restarted:
                statuses = {name: await _load(restarted, job_id) for name, job_id in ids.items()}
            # the setup runner still lives: its own job (unknown to it) is an orphan, swept
            await setup.sweep()
            statuses["orphan_of_setup"] = await _load(setup, ids["live_runner_here"])
        return statuses

    st = asyncio.run(go())
    for name in ("dead_pid", "stopped_runner_here", "silent_host", "orphan_of_setup"):
        assert st[name].status == "failed", name
        assert st[name].error is not None and st[name].error.code == "interrupted", name
    assert "is gone" in st["dead_pid"].error.detail  # type: ignore[union-attr]
    assert "has been silent since" in st["silent_host"].error.detail  # type: ignore[union-attr]
    for name in ("dead_pid", "stopped_runner_here", "silent_host"):
        detail = st[name].error.detail  # type: ignore[union-attr]
        assert "elsewhere" not in detail and re.search(r"process \d", detail) is None, detail
        assert st[name].error.error_id is not None  # type: ignore[union-attr]
    assert st["live_host"].status == "queued"
    assert st["other_pid_namespace"].status == "queued"  # its pids are not ours to check
    assert st["live_runner_here"].status == "queued"  # its runner (setup) was alive
    assert st["other_service"].status == "queued"  # never swept by another service


async def _load(runner: JobRunner, job_id: uuid.UUID) -> JobStatus:
    async with runner.db.session() as session:
        status = await store.load_job(session, job_id=job_id, service=SERVICE)
        if status is None:
            status = await store.load_job(session, job_id=job_id, service="predictor")
    assert status is not None
    return status


def test_shutdown_interrupts_unfinished_jobs_and_stops_their_tasks(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"

    async def go() -> tuple[JobStatus, JobStatus, JobStatus]:
        async with running(tmp_path, job_max_running=1) as runner:
            spinning = await runner.submit("spin", {}, partial(_spin, marker))
            await until(lambda: _running(runner, spinning), "the spin to run")

            async def never(ctx: JobContext) -> None:
                return None

            queued = await runner.submit("queued", {}, never)
        async with running(tmp_path) as restarted:
            return (
                await restarted.get(spinning.id),
                await restarted.get(queued.id),
                spinning,
            )

    spun, queued, _ = asyncio.run(go())
    assert marker.read_text().startswith("stopped after ")
    for status in (spun, queued):
        assert status.status == "failed" and status.error is not None
        assert status.error.code == "interrupted" and status.error.status == 503
        assert "shut down while job" in status.error.detail


def test_a_cancel_through_another_instance_stops_the_owners_work(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"

    async def go() -> JobStatus:
        async with (
            running(tmp_path, job_heartbeat_s=0.05) as owner,
            running(tmp_path) as other,
        ):
            job = await owner.submit("spin", {}, partial(_spin, marker))
            await until(lambda: _running(owner, job), "the spin to run")
            await other.cancel(job.id)
            await until(lambda: exists(marker), "the owner to stop the work")
            return await owner.get(job.id)

    status = asyncio.run(go())
    assert status.status == "failed" and status.error is not None
    assert status.error.code == "cancelled"


def test_map_results_match_the_plain_function(tmp_path: Path) -> None:
    async def go() -> list[float]:
        async with running(tmp_path) as runner:

            async def work(ctx: JobContext) -> list[float]:
                return await ctx.map(simulate_path, range(5), where="process")

            status = await finished(runner, await runner.submit("sim", {}, work))
            assert status.status == "succeeded", status.error
            return list(status.result)

    assert asyncio.run(go()) == [simulate_path(seed) for seed in range(5)]
