"""Following another service's job over HTTP (shared.jobs.follow_job): to its end with its
progress, and cancelled with the follower (nothing keeps running for nobody)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.http import ServiceClient, app_lifespan
from shared.jobs import JobProgress, JobStatus, follow_job
from tests.unit.shared.conftest import WAIT_S
from tests.unit.shared.job_app import create_app, job_settings


async def _with_service(tmp_path: Path, body):  # type: ignore[no-untyped-def]
    app = create_app(job_settings(tmp_path))
    async with app_lifespan(app), ServiceClient("sims", app=app) as client:
        return await body(client)


def test_a_followed_job_ends_with_its_result_and_its_progress(tmp_path: Path) -> None:
    seen: list[JobProgress] = []

    async def body(client: ServiceClient) -> JobStatus:
        started = await client.request("POST", "/simulations", json={"paths": 5})
        return await follow_job(client, started, on_progress=seen.append, poll_s=0.01)

    status = asyncio.run(_with_service(tmp_path, body))
    assert status.status == "succeeded"
    assert len(status.result["paths"]) == 5
    assert seen[-1].done == seen[-1].total == 5.0
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert len({(p.done, p.message) for p in seen}) == len(seen)  # changes only


def test_a_failed_job_is_returned_with_its_problem(tmp_path: Path) -> None:
    async def body(client: ServiceClient) -> JobStatus:
        started = await client.request("POST", "/failures", json={"kind": "domain"})
        return await follow_job(client, started, poll_s=0.01)

    status = asyncio.run(_with_service(tmp_path, body))
    assert status.status == "failed"
    assert status.error is not None and status.error.field == "steps"


@pytest.mark.parametrize("how", ["cancelled", "timeout"])
def test_a_stopped_follower_cancels_the_job(tmp_path: Path, how: str) -> None:
    async def body(client: ServiceClient) -> tuple[JobStatus, BaseException | None]:
        started = await client.request("POST", "/spins", json={"limit_s": WAIT_S})
        job = JobStatus.model_validate_json(started.content)
        follower = asyncio.create_task(
            follow_job(client, job, poll_s=0.01, timeout_s=0.5 if how == "timeout" else None)
        )
        if how == "cancelled":
            for _ in range(int(WAIT_S / 0.01)):  # cancel once the job runs
                if (await client.get_model(f"/jobs/{job.id}", JobStatus)).status == "running":
                    break
                await asyncio.sleep(0.01)
            follower.cancel()
        raised: BaseException | None = None
        try:
            await follower
        except (asyncio.CancelledError, TimeoutError) as e:
            raised = e
        for _ in range(int(WAIT_S / 0.01)):
            status = await client.get_model(f"/jobs/{job.id}", JobStatus)
            if status.status == "failed":
                break
            await asyncio.sleep(0.01)
        return status, raised

    status, raised = asyncio.run(_with_service(tmp_path, body))
    expected = asyncio.CancelledError if how == "cancelled" else TimeoutError
    assert isinstance(raised, expected)
    assert status.status == "failed" and status.error is not None
    assert status.error.code == "cancelled"
