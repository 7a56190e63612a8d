"""The job contract's problems: every job error is one of these (RFC 9457 via AppError)."""

from __future__ import annotations

import logging

from shared.errors import AppError, NotFoundError, Problem, new_error_id

log = logging.getLogger(__name__)


def logged_failure(error: AppError, log_message: str, *, traceback: bool = True) -> Problem:
    """Return error's problem with a new error id, and log log_message under that id.

    A failed job's answer says what failed in the client's words; exception text, host
    names and pids go to the log only (with the exception being handled, when traceback).
    """
    error_id = new_error_id()
    log.error("error_id=%s %s", error_id, log_message, exc_info=traceback)
    return error.to_problem(error_id=error_id)


class JobNotFoundError(NotFoundError):
    """No job with this id belongs to this service."""

    code = "job_not_found"
    title = "Job not found"


class JobFinishedError(AppError):
    """The job already ended, so it cannot be cancelled."""

    status = 409
    code = "job_finished"
    title = "Job already finished"


class JobCancelledError(AppError):
    """The job was cancelled (the `error` of a cancelled job)."""

    status = 409
    code = "cancelled"
    title = "Job cancelled"


class JobInterruptedError(AppError):
    """The service stopped while the job was queued or running (the job cannot resume)."""

    status = 503
    code = "interrupted"
    title = "Job interrupted"


class JobFailedError(AppError):
    """The job's work failed unexpectedly."""

    status = 500
    code = "job_failed"
    title = "Job failed"


class JobTimeoutError(AppError):
    """A follower gave up waiting for a job that is still running."""

    status = 504
    code = "job_timeout"
    title = "Job still running"


class JobsUnavailableError(AppError):
    """The runner is not accepting jobs (not started, or shutting down)."""

    status = 503
    code = "jobs_unavailable"
    title = "Jobs unavailable"


class JobsFullError(AppError):
    """The service holds as many queued jobs as it may; retry after `Retry-After`."""

    status = 503
    code = "jobs_full"
    title = "Too many queued jobs"


class JobRunTimeoutError(AppError):
    """The job ran longer than its kind may (the `error` of a job stopped for it)."""

    status = 504
    code = "timeout"
    title = "Job ran too long"
