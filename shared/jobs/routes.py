"""HTTP side of the job contract: `202 Accepted` + `Location`, `GET /jobs/{id}`, and
`POST /jobs/{id}/cancel`.

Cancelling is a `POST` to the job's `cancel` action, not a `DELETE` of the job: a cancelled
job stays readable (`failed`, code `cancelled`) so that whoever follows it learns how it
ended, and a `DELETE` would promise the resource is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.routing import NoMatchFound
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import PROBLEM_MEDIA_TYPE, Problem
from shared.jobs.runner import IDEMPOTENCY_KEY, JobRunner
from shared.jobs.schemas import JobStatus
from shared.state import Slot

GET_JOB = "get_job"
CANCEL_JOB = "cancel_job"
# The longest `GET /jobs/{id}?wait_s=` may hold a request: under the MCP gateway's call
# budget (GATEWAY_CALL_BUDGET_S, 40 s) and far under a client's 60 s timeout.
MAX_WAIT_S = 30.0
IDEMPOTENCY_HEADER = b"idempotency-key"
CANCEL_ACTION = "cancel"


def cancel_path(status_path: str) -> str:
    """Return the path that cancels the job whose status is at status_path (`POST` it)."""
    return f"{status_path.rstrip('/')}/{CANCEL_ACTION}"


class IdempotencyKey:
    """Make a request's `Idempotency-Key` header the key of any job it submits."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its key (if any) visible to JobRunner.submit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = next(
            (v.decode("latin-1")[:200] for k, v in scope["headers"] if k == IDEMPOTENCY_HEADER),
            None,
        )
        token = IDEMPOTENCY_KEY.set(key or "")
        try:
            await self.app(scope, receive, send)
        finally:
            IDEMPOTENCY_KEY.reset(token)


def _problems(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": Problem,
            "description": text,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code, text in descriptions.items()
    }


NOT_FOUND = "No job with this id in this service (`code`: `job_not_found`)."
BAD_ID = "`job_id` is not a UUID."


def accepted_responses() -> dict[int | str, dict[str, Any]]:
    """Return the OpenAPI `responses` entry of a route that starts a job (202 + Location)."""
    return {
        202: {
            "model": JobStatus,
            "description": "Accepted: the job is queued. `Location` is its status URL: `GET` it "
            "(`?wait_s=` waits up to 30 s for the end) until `status` is `succeeded` (then "
            "`result` or `result_url`) or `failed` (then `error`); `POST <Location>/cancel` "
            "cancels it. The same request again while the job runs (or the same "
            "`Idempotency-Key` header) answers this job instead of starting another.",
            "headers": {
                "Location": {
                    "description": "The job's status URL (`.../jobs/{id}`).",
                    "schema": {"type": "string"},
                }
            },
        }
    }


# The app's job runner: the service's lifespan puts it on `app.state.jobs` (`JOBS.put`).
JOBS = Slot("jobs", JobRunner)


def status_path(request: Request, job_id: uuid.UUID) -> str:
    """Return the path of a job's status under this app's mount point (`/backtest/jobs/..`).

    `request.url_for` would search every app mounted beside this one and can answer another
    service's `get_job`; this app's own router plus the scope's `root_path` cannot.
    """
    try:
        path = request.app.url_path_for(GET_JOB, job_id=str(job_id))
    except NoMatchFound as e:
        raise RuntimeError("a job service must include job_router() in its app") from e
    return str(request.scope.get("root_path", "")).rstrip("/") + str(path)


def render(request: Request, status: JobStatus) -> dict[str, Any]:
    """Return status as JSON, a service-relative `result_url` prefixed with the mount point."""
    body = status.model_dump(mode="json")
    url = status.result_url
    if url and url.startswith("/") and not url.startswith("//"):
        body["result_url"] = str(request.scope.get("root_path", "")).rstrip("/") + url
    return body


def accepted(request: Request, status: JobStatus) -> JSONResponse:
    """Answer `202 Accepted` with the job's JSON and `Location: <its status URL>`."""
    return JSONResponse(
        render(request, status),
        status_code=202,
        headers={"Location": status_path(request, status.id)},
    )


def job_router(
    *,
    runner: Callable[..., Any] = JOBS,
    prefix: str = "/jobs",
    tags: list[str | Enum] | None = None,
    responses: Mapping[int | str, dict[str, Any]] | None = None,
) -> APIRouter:
    """Return the routes `GET {prefix}/{job_id}` (`get_job`) and `POST {prefix}/{job_id}/cancel`
    (`cancel_job`).

    runner is a FastAPI dependency returning the service's JobRunner; responses adds the
    service's own problem answers (401, 503, ...) to both routes.
    """
    router = APIRouter(prefix=prefix, tags=tags or ["jobs"])
    extra = dict(responses or {})

    @router.get(
        "/{job_id}",
        name=GET_JOB,
        operation_id=GET_JOB,
        response_model=JobStatus,
        responses={**_problems({404: NOT_FOUND, 422: BAD_ID}), **extra},
    )
    async def get_job(
        job_id: uuid.UUID,
        request: Request,
        wait_s: float = Query(
            default=0.0,
            ge=0,
            le=MAX_WAIT_S,
            description="Wait up to this many seconds for the job to end before answering "
            f"(long poll, at most {MAX_WAIT_S:g}); 0 answers at once.",
        ),
        jobs: JobRunner = Depends(runner),
    ) -> JSONResponse:
        """Return a job's status: `queued`, `running`, `succeeded` or `failed`.

        With `wait_s`, answers as soon as the job ends or after `wait_s` seconds. `progress`
        is `done` of `total` units with a `message`. A succeeded job carries its `result` (or
        a `result_url` to GET); a failed one its `error` (a problem: `code` is `cancelled`
        after a cancel, `interrupted` if the service stopped while it ran).
        """
        status = await (jobs.wait(job_id, wait_s) if wait_s > 0 else jobs.get(job_id))
        return JSONResponse(render(request, status))

    @router.post(
        f"/{{job_id}}/{CANCEL_ACTION}",
        name=CANCEL_JOB,
        operation_id=CANCEL_JOB,
        response_model=JobStatus,
        responses={
            **_problems(
                {
                    404: NOT_FOUND,
                    409: "The job already ended (`code`: `job_finished`); nothing changed.",
                    422: BAD_ID,
                }
            ),
            **extra,
        },
    )
    async def cancel_job(
        job_id: uuid.UUID, request: Request, jobs: JobRunner = Depends(runner)
    ) -> JSONResponse:
        """Cancel a queued or running job; answer its status, now `failed` (`cancelled`).

        Its work stops (running tasks are told to stop) and it never gets a result. A job
        that already ended cannot be cancelled: 409 `job_finished`.
        """
        return JSONResponse(render(request, await jobs.cancel(job_id)))

    return router
