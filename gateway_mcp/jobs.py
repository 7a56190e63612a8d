"""Follow a service job to its end (the `shared.jobs` contract), reporting MCP progress.

A job route answers `202 Accepted` with `Location: <status URL>`. The status resource
answers a `shared.jobs.JobStatus`: `status` is `queued | running | succeeded | failed`,
`progress` is `{done, total, message}`, a succeeded job carries `result` (or `result_url`,
fetched here) and a failed one `error`, a problem that becomes the tool error. Nothing
here knows which routes are jobs: any 202 with a `Location` is followed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
from pydantic import ValidationError

from shared.errors import PROBLEM_MEDIA_TYPE, Problem, UpstreamUnavailableError
from shared.jobs import JobFailedError, JobStatus, JobTimeoutError, cancel_path

log = logging.getLogger(__name__)

Send = Callable[[httpx2.Request], Awaitable[httpx2.Response]]
Report = Callable[[float, float | None, str | None], Awaitable[None]]
Handle = Callable[[JobStatus, httpx2.URL], dict[str, Any]]
# When the tool call being served must have answered (time.monotonic()), set per call.
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "call_deadline", default=None
)


def status_url(request: httpx2.Request, response: httpx2.Response) -> httpx2.URL | None:
    """Return the absolute status URL of a 202 job answer to request (its `Location`)."""
    target = response.headers.get("location")
    if response.status_code != 202 or not target:
        return None
    return request.url.join(target)


def _json(request: httpx2.Request, status: int, payload: Any) -> httpx2.Response:
    return httpx2.Response(
        status,
        content=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        request=request,
    )


def problem_answer(request: httpx2.Request, problem: Problem) -> httpx2.Response:
    """Return problem as the problem-details answer to request."""
    status = problem.status if 400 <= problem.status < 600 else 500
    return httpx2.Response(
        status,
        content=problem.model_dump_json(exclude_none=True).encode(),
        headers={"content-type": PROBLEM_MEDIA_TYPE},
        request=request,
    )


async def follow_job(
    send: Send,
    original: httpx2.Request,
    url: httpx2.URL,
    *,
    report: Report,
    poll_interval_s: float,
    timeout_s: float,
    service: str,
    handle: Handle | None = None,
) -> httpx2.Response:
    """Poll a job until it ends; return its result (or its problem) as an HTTP response.

    Progress goes to report whenever `progress.done` grows (MCP progress must increase).
    When the call's deadline (CALL_DEADLINE) comes first, the answer is handle(job): the
    job's handle and the call that continues, and the job runs on. When the caller goes
    away (a client's `notifications/cancelled` cancels this task), the job is cancelled.
    """
    try:
        return await _follow(
            send,
            original,
            url,
            report=report,
            poll_interval_s=poll_interval_s,
            timeout_s=timeout_s,
            service=service,
            handle=handle,
        )
    except BaseException:  # cancelled (or failed) while following: the job must not run on
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            headers = {k: v for k, v in original.headers.items() if k.lower() == "authorization"}
            try:
                cancel = url.copy_with(path=cancel_path(url.path))
                await send(httpx2.Request("POST", cancel, headers=headers))
            except Exception as e:  # the service is away: its sweep ends the job later
                log.warning("%s job at %s not cancelled: %s", service, url, e)
        raise


async def _follow(
    send: Send,
    original: httpx2.Request,
    url: httpx2.URL,
    *,
    report: Report,
    poll_interval_s: float,
    timeout_s: float,
    service: str,
    handle: Handle | None,
) -> httpx2.Response:
    headers = {k: v for k, v in original.headers.items() if k.lower() == "authorization"}

    async def get(target: httpx2.URL) -> httpx2.Response:
        request = httpx2.Request("GET", target, headers=headers)
        response = await send(request)
        await response.aread()
        response.request = request
        return response

    deadline = time.monotonic() + timeout_s
    wait = min(0.05, poll_interval_s)
    last_done: float | None = None
    while True:
        polled = await get(url)
        if polled.is_error:  # the service's own problem (unknown job, unavailable, ...)
            return polled
        try:
            job = JobStatus.model_validate_json(polled.content)
        except ValidationError as e:
            return problem_answer(
                original,
                UpstreamUnavailableError(
                    f"The {service} service answered the job status {url} with something "
                    f"that is not a job status ({e.error_count()} errors, first: "
                    f"{e.errors()[0]['msg']})."
                ).to_problem(),
            )
        progress = job.progress
        if last_done is None or progress.done > last_done:
            message = progress.message or f"job {job.status}"
            if last_done is None and progress.done == 0:  # the first word names the job
                message = f"{service} job {job.id} {job.status}" + (
                    f": {progress.message}" if progress.message else ""
                )
            last_done = progress.done
            await report(progress.done, progress.total, message)
        if job.status == "succeeded":
            if progress.total is not None and last_done < progress.total:
                await report(progress.total, progress.total, progress.message or "done")
            if job.result_url:
                return await get(polled.request.url.join(job.result_url))
            if job.result is not None:
                return _json(original, 200, job.result)
            return _json(original, 200, job.model_dump(mode="json"))
        if job.status == "failed":
            problem = (
                job.error
                or JobFailedError(
                    f"The {service} job {job.id} failed without saying why."
                ).to_problem()
            )
            return problem_answer(original, problem)
        call_deadline = CALL_DEADLINE.get()
        soon = time.monotonic() + min(wait, poll_interval_s)
        if handle is not None and call_deadline is not None and soon >= call_deadline:
            return _json(original, 200, handle(job, url))
        if time.monotonic() >= deadline:
            return problem_answer(
                original,
                JobTimeoutError(
                    f"The {service} job did not finish within {timeout_s:.0f} s; it is still "
                    f"running, its status is at {url}."
                ).to_problem(),
            )
        await anyio.sleep(wait)
        wait = min(wait * 2, poll_interval_s)
