"""The platform's one job contract: long work (sweeps, walk-forward, Monte Carlo, training).

A service that runs long work does four things:

1. In its lifespan, after `await db.migrate()`, start a runner and put it on `app.state.jobs`:

       runner = JobRunner(db, service="backtest", settings=settings)
       await runner.start()        # marks jobs of dead processes failed/interrupted
       JOBS.put(app, runner)       # app.state.jobs, typed (shared.state.Slot)
       yield
       await runner.aclose()       # unfinished jobs end failed/interrupted

2. Include the status routes: `app.include_router(job_router())` adds `GET /jobs/{job_id}`
   (`get_job`) and `POST /jobs/{job_id}/cancel` (`cancel_job`). Pass `responses=` to declare the
   service's own problems (401, 503) on them too.

3. Start jobs from a `POST` that answers `202 Accepted`, `Location: <status URL>` and the
   job's JSON (`JobStatus`):

       @router.post("/walk-forward", operation_id="run_walk_forward", status_code=202,
                    response_model=JobStatus, responses=accepted_responses())
       async def run_walk_forward(body: WalkForwardRequest, request: Request) -> JSONResponse:
           job = await JOBS.of(request).submit("walk_forward", body,
                                               partial(walk_forward, body))
           return accepted(request, job)

   The status URL is built from the app's own router and the scope's `root_path`, so it
   is right under a mount (`trading serve`'s `/backtest`) and behind a proxy prefix.

4. Write the work as `async def work(ctx: JobContext) -> result`. It runs on the event
   loop and must not block it: CPU work goes to tasks.

       async def walk_forward(body, ctx: JobContext) -> WalkForwardResult:
           bars = await load_bars(...)                       # async I/O is fine here
           rows = await ctx.map(run_window, windows, where="thread", what="windows")
           return WalkForwardResult(...)                     # stored as the job's result

   - `await ctx.run(fn, *args, where=...)` runs one task; `await ctx.map(fn, items,
     where=...)` runs fn(item) per item (trials, windows, models) and returns the results in
     order, advancing progress per finished task. `where="thread"` (default) for numba
     kernels that release the GIL; `where="process"` for work that holds it (training).
     With `DASK_SCHEDULER_ADDRESS` set every task goes to that Dask cluster instead.
     Task functions must be module-level functions of an importable module (worker
     processes import them); arguments and results must pickle. Worker processes come
     from a forkserver (spawn where there is none) and are started on the first process
     task; like any multiprocessing user, a script that runs them needs a `__main__` guard.
   - `ctx.report(done, total, message)` sets the job's progress; it never blocks, and the
     runner writes it at most every `JOB_PROGRESS_INTERVAL_S`. Keep `done` increasing over
     the whole job (MCP clients are only sent increasing progress).
   - Inside a task, `task_report(done, total, message)` reports the task's own progress
     (e.g. per epoch) and `task_cancelled()` says whether to stop; both work in threads,
     worker processes and on Dask, and do nothing outside a job.
   - Return a JSON-able value or pydantic model (the job's `result`), or
     `ResultUrl("/backtests/42")` when the service stored a large result itself (a path
     within the service; status answers prefix it with the mount point).
   - Raise an `AppError` to fail with that problem; any other exception fails the job with
     `job_failed` (logged). A cancelled job's work is cancelled at its next `await`, its
     tasks see `task_cancelled()`, and nothing it returns afterwards is stored.

Statuses are exactly `queued | running | succeeded | failed`. A cancelled job ends
`failed` with `error.code == "cancelled"`; a job whose process died (or whose service shut
down) ends `failed` with `error.code == "interrupted"`, found at the next start (dead local
pid) or by the periodic sweep (heartbeat older than `JOB_STALE_AFTER_S`). Each service
only ever sweeps its own jobs (the `service` column). A cancel of a job that already ended
answers 409 `job_finished` and changes nothing. At most `JOB_MAX_RUNNING` jobs run per
process; the rest stay `queued`.
"""

from shared.jobs.context import JobContext
from shared.jobs.errors import (
    JobCancelledError,
    JobFailedError,
    JobFinishedError,
    JobInterruptedError,
    JobNotFoundError,
    JobsUnavailableError,
    JobTimeoutError,
)
from shared.jobs.executors import Where
from shared.jobs.follow import follow_job
from shared.jobs.routes import (
    JOBS,
    accepted,
    accepted_responses,
    cancel_path,
    job_router,
    status_path,
)
from shared.jobs.runner import JobRunner, Work
from shared.jobs.schemas import JobProgress, JobState, JobStatus, ResultUrl
from shared.jobs.tasks import task_cancelled, task_report

__all__ = [
    "JOBS",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobFinishedError",
    "JobInterruptedError",
    "JobNotFoundError",
    "JobProgress",
    "JobRunner",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "JobsUnavailableError",
    "ResultUrl",
    "Where",
    "Work",
    "accepted",
    "accepted_responses",
    "cancel_path",
    "follow_job",
    "job_router",
    "status_path",
    "task_cancelled",
    "task_report",
]
