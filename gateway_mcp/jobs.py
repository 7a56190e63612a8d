"""Follow a service job to its end, reporting MCP progress while it runs.

A service runs long work as a job: `POST` answers `202 Accepted` with the job's status URL
in `Location` (or a `status_url`/`href`/`links.self` body field). The status resource
answers JSON with `status` (or `state`), optionally `progress` (0..1, or 0..`total`) and
`message`; when the job is done it carries `result` (or `result_url`, or answers
`303 See Other` to the result), and when it failed `error` (a problem-details object).
Nothing here knows which routes are jobs: any 202 that names a status URL is followed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2

log = logging.getLogger(__name__)

DONE = frozenset(
    {"succeeded", "success", "successful", "completed", "complete", "done", "finished"}
)
FAILED = frozenset({"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted"})

Send = Callable[[httpx2.Request], Awaitable[httpx2.Response]]
Report = Callable[[float, float | None, str | None], Awaitable[None]]


def _json(response: httpx2.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def status_url(request: httpx2.Request, response: httpx2.Response) -> httpx2.URL | None:
    """Return the absolute status URL of a 202 job answer to request, or None if none."""
    if response.status_code != 202:
        return None
    target = response.headers.get("location")
    body = _json(response)
    if not target and isinstance(body, dict):
        links = body.get("links")
        target = (
            body.get("status_url")
            or body.get("href")
            or (links.get("self") if isinstance(links, dict) else None)
        )
    if not isinstance(target, str) or not target:
        return None
    return request.url.join(target)


def _progress(body: dict[str, Any]) -> tuple[float, float] | None:
    value = body.get("progress")
    if isinstance(value, dict):  # {"progress": {"done": 3, "total": 10}}
        done = value.get("done", value.get("current", value.get("completed")))
        total = value.get("total")
        if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
            return float(done), float(total)
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    total = body.get("total")
    if isinstance(total, int | float) and not isinstance(total, bool) and total > 0:
        return float(value), float(total)
    return (float(value), 1.0) if value <= 1 else (float(value), 100.0)


def _answer(request: httpx2.Request, status: int, payload: Any, media: str) -> httpx2.Response:
    return httpx2.Response(
        status,
        content=json.dumps(payload).encode(),
        headers={"content-type": media},
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
) -> httpx2.Response:
    """Poll a job until it ends; return its result (or its problem) as an HTTP response."""
    headers = {k: v for k, v in original.headers.items() if k.lower() == "authorization"}

    async def get(target: httpx2.URL) -> httpx2.Response:
        request = httpx2.Request("GET", target, headers=headers)
        response = await send(request)
        await response.aread()
        response.request = request
        return response

    await report(0.0, None, "job accepted")
    deadline = time.monotonic() + timeout_s
    wait = min(0.05, poll_interval_s)
    last: tuple[float, float] | None = None
    while True:
        polled = await get(url)
        if polled.status_code in (302, 303) and polled.headers.get("location"):
            return await get(polled.request.url.join(polled.headers["location"]))
        if polled.is_error:
            return polled
        body = _json(polled)
        if not isinstance(body, dict):
            return polled
        state = str(body.get("status") or body.get("state") or "").lower()
        progress = _progress(body)
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if progress is not None and progress != last:
            last = progress
            await report(progress[0], progress[1], message or state or None)
        if state in DONE:
            if last is not None and last[0] < last[1]:
                await report(last[1], last[1], "done")
            if "result" in body:
                return _answer(original, 200, body["result"], "application/json")
            if isinstance(body.get("result_url"), str):
                return await get(polled.request.url.join(body["result_url"]))
            return polled
        if state in FAILED:
            error = body.get("error")
            problem: dict[str, Any] = {
                "type": "about:blank",
                "title": "Job failed",
                "status": 500,
                "detail": str(error or body.get("detail") or f"the job ended as {state}"),
                "code": "job_failed",
            }
            if isinstance(error, dict) and "detail" in error:
                problem = error
            status = problem.get("status")
            status = status if isinstance(status, int) and 400 <= status < 600 else 500
            return _answer(original, status, problem, "application/problem+json")
        if time.monotonic() >= deadline:
            problem = {
                "type": "about:blank",
                "title": "Job still running",
                "status": 504,
                "detail": f"The {service} job did not finish within {timeout_s:.0f} s; "
                f"it is still running, its status is at {url}.",
                "code": "job_timeout",
            }
            return _answer(original, 504, problem, "application/problem+json")
        await anyio.sleep(wait)
        wait = min(wait * 2, poll_interval_s)
