"""A small service built with the job contract, and its task functions, for the job tests.

The task functions live here, at module level, because worker processes and Dask workers
import them. `uvicorn --factory tests.unit.shared.job_app:create_app` serves the app with
settings from the environment (DATABASE_URL, ...).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shared.api import install_error_handlers, problem_responses
from shared.config import BaseServiceSettings
from shared.db import Database
from shared.errors import ValidationProblemError
from shared.jobs import (
    JobContext,
    JobRunner,
    JobStatus,
    ResultUrl,
    accepted,
    accepted_responses,
    job_router,
    task_cancelled,
    task_report,
)
from shared.jobs.routes import IdempotencyKey
from shared.jobs.tasks import REPORT_INTERVAL_S

SERVICE = "sims"

# ---- tasks ------------------------------------------------------------------------------


def simulate_path(seed: int, steps: int = 250) -> float:
    """Return the last price of a seeded geometric random walk from 100."""
    rng = np.random.default_rng(seed)
    return float(100.0 * np.exp(rng.normal(0.0003, 0.01, steps).sum()))


def train(epochs: int, marker: str | None = None) -> dict[str, Any]:
    """Pretend to train: busy work per epoch, reporting each epoch and stopping on cancel."""
    for epoch in range(1, epochs + 1):
        if task_cancelled():
            if marker:
                Path(marker).write_text(f"cancelled after {epoch - 1} epochs")
            return {"epochs": epoch - 1, "stopped": True}
        total = 0.0
        for i in range(20_000):  # holds the GIL, as a Python training loop does
            total += i * 0.5
        time.sleep(0.02)
        task_report(epoch, epochs, f"epoch {epoch}/{epochs}")
    return {"epochs": epochs, "stopped": False, "pid": os.getpid()}


def train_gated(epochs: int, gate: str, limit_s: float = 60.0) -> dict[str, Any]:
    """Train epoch by epoch, reporting each and waiting for `<gate>/<epoch>` to appear.

    The file is the test's acknowledgement that the report reached the database, so every
    epoch's report is observable; limit_s bounds each wait.
    """
    for epoch in range(1, epochs + 1):
        task_report(epoch, epochs, f"epoch {epoch}/{epochs}")
        deadline = time.monotonic() + limit_s
        while not (Path(gate) / str(epoch)).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(REPORT_INTERVAL_S)  # the next report is not throttled away
    return {"epochs": epochs, "pid": os.getpid()}


def spin(limit_s: float, marker: str | None = None) -> dict[str, Any]:
    """Loop until the job is cancelled (or limit_s passes, a safety bound); say which."""
    start = time.monotonic()
    turns = 0
    while time.monotonic() - start < limit_s:
        if task_cancelled():
            if marker:
                Path(marker).write_text(f"stopped after {turns} turns")
            return {"stopped": True, "turns": turns}
        turns += 1
        task_report(turns, None, f"turn {turns}")
        time.sleep(0.01)
    return {"stopped": False, "turns": turns}


def slow_square(x: int) -> int:
    """Return x squared after a short sleep (so tasks overlap)."""
    time.sleep(0.05)
    return x * x


def pid_of(x: int) -> int:
    """Return the id of the process this task ran in (after a short sleep)."""
    time.sleep(0.05)
    return os.getpid()


def fail_on(x: int, bad: int = 3) -> int:
    """Return x, or raise ValueError for bad."""
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


# ---- the app ----------------------------------------------------------------------------


class SimulationRequest(BaseModel):
    paths: int = Field(default=8, ge=1, le=1000, description="Random walks to simulate.")
    steps: int = Field(default=250, ge=1, le=10_000, description="Steps per walk.")
    where: Literal["thread", "process"] = "thread"


class SpinRequest(BaseModel):
    limit_s: float = Field(default=120.0, gt=0)
    marker: str | None = None


class FailureRequest(BaseModel):
    kind: Literal["domain", "bug"] = "domain"


class StepsRequest(BaseModel):
    steps: int = Field(default=3, ge=1, le=20)


async def simulate(body: SimulationRequest, ctx: JobContext) -> dict[str, Any]:
    """Simulate body.paths walks as one task each; return their mean and last prices."""
    task = partial(simulate_path, steps=body.steps)
    values = await ctx.map(task, range(body.paths), where=body.where, what="paths")
    rows = [{"seed": seed, "last": value} for seed, value in enumerate(values)]
    return {"mean": sum(values) / len(values), "paths": rows}


async def spin_work(body: SpinRequest, ctx: JobContext) -> dict[str, Any]:
    """Spin in a thread until cancelled."""
    return await ctx.run(spin, body.limit_s, body.marker)


async def failing_work(body: FailureRequest, ctx: JobContext) -> list[int]:
    """Fail as a domain error (a 422 problem) or as a bug in a task (job_failed)."""
    if body.kind == "domain":
        raise ValidationProblemError("the simulation diverged at step 3", field="steps")
    return await ctx.map(fail_on, range(6))


async def stored_work(ctx: JobContext) -> ResultUrl:
    """Pretend the service stored a large result itself."""
    return ResultUrl(f"/stored/{ctx.job_id}")


class PollGate:
    """Lets a job wait until a `GET /jobs/...` poll that began after a moment has answered."""

    def __init__(self) -> None:
        self.armed: asyncio.Event | None = None

    async def next_poll(self) -> None:
        """Wait for a poll that starts from now on to answer."""
        self.armed = asyncio.Event()
        await self.armed.wait()


async def gated_steps(
    body: StepsRequest, gate: PollGate, runner: JobRunner, ctx: JobContext
) -> dict[str, Any]:
    """Report step k of n, wait until it is stored and a later poll answered, then go on."""
    for k in range(1, body.steps + 1):
        ctx.report(k, body.steps, f"step {k}")
        while True:
            if (await runner.get(ctx.job_id)).progress.done >= k:
                break
            await asyncio.sleep(0.01)
        await gate.next_poll()
    return {"steps": body.steps}


def job_settings(tmp_path: Path, **overrides: Any) -> BaseServiceSettings:
    """Return settings for the test service: SQLite under tmp_path, quick progress writes."""
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}",
        "redis_url": None,
        "job_progress_interval_s": 0.02,
        "job_thread_workers": 2,
        "job_process_workers": 2,
        "dask_scheduler_address": None,
    }
    values.update(overrides)
    return BaseServiceSettings(**values)


def create_app(settings: BaseServiceSettings | None = None) -> FastAPI:
    """Build the test service (settings from the environment by default)."""
    settings = settings or BaseServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url())
        await db.migrate()
        runner = JobRunner(db, service=SERVICE, settings=settings)
        await runner.start()
        app.state.jobs = runner
        try:
            yield
        finally:
            await runner.aclose()
            await db.dispose()

    app = FastAPI(title="Simulations", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(IdempotencyKey)  # as shared.app.service_app does
    gate = PollGate()

    @app.middleware("http")
    async def count_polls(request: Request, call_next):  # type: ignore[no-untyped-def]
        armed = gate.armed if request.method == "GET" and "/jobs/" in request.url.path else None
        response = await call_next(request)
        if armed is not None:
            armed.set()
        return response

    def runner_of(request: Request) -> JobRunner:
        return request.app.state.jobs  # type: ignore[no-any-return]

    @app.post(
        "/simulations",
        operation_id="run_simulation",
        status_code=202,
        response_model=JobStatus,
        responses={**accepted_responses(), **problem_responses(422)},
    )
    async def run_simulation(body: SimulationRequest, request: Request) -> JSONResponse:
        """Simulate random walks as a job; its result has their mean and last prices."""
        job = await runner_of(request).submit("simulation", body, partial(simulate, body))
        return accepted(request, job)

    @app.post(
        "/spins",
        operation_id="run_spin",
        status_code=202,
        response_model=JobStatus,
        responses={**accepted_responses(), **problem_responses(422)},
    )
    async def run_spin(body: SpinRequest, request: Request) -> JSONResponse:
        """Spin until cancelled (a job that only ends when told to)."""
        job = await runner_of(request).submit("spin", body, partial(spin_work, body))
        return accepted(request, job)

    @app.post(
        "/steps",
        operation_id="run_steps",
        status_code=202,
        response_model=JobStatus,
        responses={**accepted_responses(), **problem_responses(422)},
    )
    async def run_steps(body: StepsRequest, request: Request) -> JSONResponse:
        """Count to `steps`, one progress report per step."""
        runner = runner_of(request)
        job = await runner.submit("steps", body, partial(gated_steps, body, gate, runner))
        return accepted(request, job)

    @app.post(
        "/failures",
        operation_id="run_failure",
        status_code=202,
        response_model=JobStatus,
        responses={**accepted_responses(), **problem_responses(422)},
    )
    async def run_failure(body: FailureRequest, request: Request) -> JSONResponse:
        """A job that fails."""
        job = await runner_of(request).submit("failure", body, partial(failing_work, body))
        return accepted(request, job)

    @app.post(
        "/stored",
        operation_id="run_stored",
        status_code=202,
        response_model=JobStatus,
        responses=accepted_responses(),
    )
    async def run_stored(request: Request) -> JSONResponse:
        """A job whose result the service stores itself (result_url)."""
        return accepted(request, await runner_of(request).submit("stored", None, stored_work))

    @app.get("/stored/{job_id}", operation_id="get_stored")
    async def get_stored(job_id: str) -> dict[str, Any]:
        """Return a stored result."""
        return {"stored_for": job_id, "rows": list(range(5))}

    app.include_router(job_router())
    return app


def hold(pid_file: str, limit_s: float = 120.0) -> int:
    """Write this process's id to pid_file, then work ignoring cancellation for limit_s."""
    Path(pid_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + limit_s
    total = 0.0
    while time.monotonic() < deadline:  # holds the GIL most of the time, as training does
        for i in range(10_000):
            total += i * 0.5
        time.sleep(0.01)
    return os.getpid()
