"""Follow another service's job over its HTTP contract (a service that starts long work in
another: the backtest's ML walk-forward trains models through the predictor's `POST /train`).

The job is followed by its id at `GET /jobs/{id}` on the same client, not by the `Location`
header: that path carries the mount point the other service is served under, which the
client's base URL already holds. Cancelling the follower (the caller's own job was
cancelled) cancels the followed job too, so nothing keeps training for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

from shared.http import ServiceClient
from shared.jobs.routes import cancel_path
from shared.jobs.schemas import FINISHED, JobProgress, JobStatus

ProgressListener = Callable[[JobProgress], None]


async def follow_job(
    client: ServiceClient,
    started: httpx.Response | JobStatus,
    *,
    on_progress: ProgressListener | None = None,
    poll_s: float = 0.25,
    timeout_s: float | None = None,
) -> JobStatus:
    """Return the final status of a job another service started (`succeeded` or `failed`).

    ``started`` is the 202 answer of the `POST` (or its parsed status). ``on_progress``
    hears each change of progress. Raises TimeoutError after ``timeout_s`` (the job is
    cancelled first); cancelling this coroutine cancels the job (best effort).
    """
    status = (
        started
        if isinstance(started, JobStatus)
        else JobStatus.model_validate_json(started.content)
    )
    path = f"/jobs/{status.id}"
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last: JobProgress | None = None
    try:
        while True:
            if on_progress is not None and status.progress != last:
                last = status.progress
                on_progress(status.progress)
            if status.status in FINISHED:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{client.service} job {status.id} ran past {timeout_s} s")
            await asyncio.sleep(poll_s)
            status = await client.get_model(path, JobStatus)
    except BaseException:
        if status.status not in FINISHED:
            await asyncio.shield(_cancel(client, path))
        raise


async def _cancel(client: ServiceClient, path: str) -> None:
    """Cancel a followed job; a job that ended meanwhile or a lost service is no matter."""
    with contextlib.suppress(Exception):
        await client.request("POST", cancel_path(path))
