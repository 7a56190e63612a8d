"""The public shape of a job: what `POST` (202), `GET /jobs/{id}` and its cancel answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.errors import Problem

JobState = Literal["queued", "running", "succeeded", "failed"]
ACTIVE: tuple[JobState, ...] = ("queued", "running")
FINISHED: tuple[JobState, ...] = ("succeeded", "failed")


class JobProgress(BaseModel):
    """How far a job has come, as reported by its work."""

    done: float = Field(default=0.0, ge=0, description="Units of work done so far.")
    total: float | None = Field(
        default=None, ge=0, description="Units of work in all; null while unknown."
    )
    message: str | None = Field(default=None, description="What the job is doing now.")


class JobStatus(BaseModel):
    """A job's state: the body of every job answer (`202` on start, `GET`, cancel)."""

    id: uuid.UUID = Field(description="The job's id; its status is at `.../jobs/{id}`.")
    kind: str = Field(description="What the job does, e.g. `walk_forward` or `train_model`.")
    status: JobState = Field(
        description="`queued` (waiting for a worker), `running`, `succeeded` (`result` or "
        "`result_url` is set) or `failed` (`error` says why; `error.code` is `cancelled` "
        "after a cancel and `interrupted` when the service stopped while it ran)."
    )
    progress: JobProgress = Field(default_factory=JobProgress)
    request: dict[str, Any] = Field(
        default_factory=dict, description="The request the job was started with."
    )
    result: Any = Field(default=None, description="The job's result, once it succeeded.")
    result_url: str | None = Field(
        default=None,
        description="Where a large result is stored instead of `result` (GET it), once the job "
        "succeeded.",
    )
    error: Problem | None = Field(default=None, description="Why the job failed (RFC 9457).")
    created_at: datetime = Field(description="When the job was accepted (UTC).")
    started_at: datetime | None = Field(default=None, description="When it started running.")
    finished_at: datetime | None = Field(default=None, description="When it ended.")
    updated_at: datetime = Field(description="When its state or progress last changed.")


@dataclass(frozen=True)
class ResultUrl:
    """Return this from a job's work when the service stored the result itself.

    `url` is a path within the service (`/backtests/42`: status answers prefix it with the
    service's mount point) or an absolute URL.
    """

    url: str
