"""The same job on the local executor and on a Dask cluster (`distributed.LocalCluster`).

The runner picks Dask when `DASK_SCHEDULER_ADDRESS` is set: the job's tasks run on the
cluster's two worker processes while its state and progress stay in the database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import JobContext, JobStatus
from tests.unit.shared.conftest import exists, finished, running, until
from tests.unit.shared.job_app import SimulationRequest, pid_of, simulate, spin

distributed = pytest.importorskip("distributed", reason="the `dask` extra is not installed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Start a LocalCluster with two worker processes; close it afterwards."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def _simulation(tmp_path: Path, **overrides: Any) -> JobStatus:
    body = SimulationRequest(paths=16, steps=500)

    async def go() -> JobStatus:
        async with running(tmp_path, **overrides) as runner:
            job = await runner.submit("simulation", body, partial(simulate, body))
            return await finished(runner, job)

    return asyncio.run(go())


def test_the_same_job_gives_the_same_result_locally_and_on_dask(
    cluster: Any, tmp_path: Path
) -> None:
    local = _simulation(tmp_path / "local")
    on_dask = _simulation(tmp_path / "dask", dask_scheduler_address=cluster.scheduler_address)

    assert local.status == on_dask.status == "succeeded", (local.error, on_dask.error)
    assert on_dask.result == local.result
    assert len(on_dask.result["paths"]) == 16
    assert on_dask.progress.model_dump() == local.progress.model_dump()
    assert on_dask.progress.message == "16 of 16 paths done"


def test_tasks_run_on_the_cluster_workers(cluster: Any, tmp_path: Path) -> None:
    async def go() -> JobStatus:
        address = cluster.scheduler_address
        async with running(tmp_path, dask_scheduler_address=address) as runner:

            async def work(ctx: JobContext) -> list[int]:
                return await ctx.map(pid_of, range(8))

            return await finished(runner, await runner.submit("pids", {}, work))

    status = asyncio.run(go())
    with distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
    assert status.status == "succeeded", status.error
    assert len(workers) == 2 and os.getpid() not in workers
    assert set(status.result) <= workers


def test_a_dask_task_reports_progress_and_stops_on_cancel(cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"

    async def go() -> JobStatus:
        address = cluster.scheduler_address
        async with running(tmp_path, dask_scheduler_address=address) as runner:

            async def work(ctx: JobContext) -> Any:
                return await ctx.run(spin, 120.0, str(marker))

            job = await runner.submit("spin", {}, work)

            async def reported() -> bool:
                message = (await runner.get(job.id)).progress.message or ""
                return message.startswith("turn ")

            await until(reported, "a turn reported from the Dask worker")
            await runner.cancel(job.id)
            await until(lambda: exists(marker), "the Dask task to notice the cancel")
            return await runner.get(job.id)

    status = asyncio.run(go())
    assert status.status == "failed" and status.error is not None
    assert status.error.code == "cancelled" and status.result is None
    assert marker.read_text().startswith("stopped after ")
