"""One error family for every service, rendered as RFC 9457 problem details."""

from __future__ import annotations

import difflib
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldIssue(BaseModel):
    """One invalid input field."""

    field: str = Field(description="Name of the offending parameter or body field, dotted.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """RFC 9457 problem details: every error answer of every service has this shape."""

    type: str = Field(
        default="about:blank",
        description="URI naming the problem type; `about:blank` or `urn:problem:<code>`.",
    )
    title: str = Field(description="Short, human-readable summary of the problem type.")
    status: int = Field(description="HTTP status code of this answer.")
    detail: str = Field(description="Explanation specific to this occurrence.")
    code: str = Field(description="Stable machine-readable error code, e.g. `invalid_symbol`.")
    field: str | None = Field(
        default=None, description="The input field at fault, when one field is to blame."
    )
    errors: list[FieldIssue] | None = Field(
        default=None, description="Every invalid field, for validation failures."
    )
    instance: str | None = Field(default=None, description="The request path that failed.")
    error_id: str | None = Field(
        default=None,
        description="On server-side failures (5xx): quote it when reporting the problem; the "
        "service logged the internal details under this id.",
    )


class AppError(Exception):
    """Base of every domain error: an HTTP status, a stable code and a detail message."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        errors: list[FieldIssue] | None = None,
        extra: dict[str, Any] | None = None,
        log_detail: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.retry_after_s: int | None = None  # set: answered with a Retry-After header
        self.detail = detail
        self.field = field
        self.errors = errors
        self.extra = extra or {}
        # For the log only (hosts, paths, driver messages): never part of an answer.
        self.log_detail = log_detail

    def to_problem(self, instance: str | None = None, error_id: str | None = None) -> Problem:
        """Return this error as a problem-details model (what a client may see)."""
        return Problem(
            type=f"urn:problem:{self.code}",
            title=self.title,
            status=self.status,
            detail=self.detail,
            code=self.code,
            field=self.field,
            errors=self.errors,
            instance=instance,
            error_id=error_id,
        )


def new_error_id() -> str:
    """Return a short random id tying a 5xx answer to its log lines."""
    return uuid.uuid4().hex[:12]


class BadRequestError(AppError):
    """The request body could not be read at all."""

    status = 400
    code = "bad_request"
    title = "Bad request"


class UnauthorizedError(AppError):
    """A bearer token is required and was missing or wrong."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class NotFoundError(AppError):
    """The thing asked for does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class SymbolNotFoundError(NotFoundError):
    """No instrument by this symbol is known (to the market service or its data sources)."""

    code = "symbol_not_found"


class NoDataError(NotFoundError):
    """The symbol exists but has no bar in the asked range."""

    code = "no_data"
    title = "No data in range"


class ValidationProblemError(AppError):
    """An input is syntactically fine but not acceptable."""

    status = 422
    code = "validation_error"
    title = "Invalid input"


class RateLimitedError(AppError):
    """Too many requests to an upstream or to us."""

    status = 429
    code = "rate_limited"
    title = "Rate limited"


class UpstreamUnavailableError(AppError):
    """An upstream (data vendor, another service) could not be reached."""

    status = 502
    code = "upstream_unavailable"
    title = "Upstream unavailable"


class DatabaseUnavailableError(AppError):
    """The database could not be reached in time."""

    status = 503
    code = "database_unavailable"
    title = "Database unavailable"


class DatabaseBusyError(DatabaseUnavailableError):
    """The database works but every connection is in use (load, not an outage)."""

    code = "database_busy"
    title = "Database busy"


class ServiceUnavailableError(AppError):
    """Another platform service could not be reached."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class ServiceTimeoutError(AppError):
    """Another platform service did not answer in time."""

    status = 504
    code = "service_timeout"
    title = "Service timeout"


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """Return the valid name closest to name (a typo's intended name), or None if none is."""
    options = sorted({str(v) for v in valid})
    lowered = {v.lower(): v for v in options}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if match:
        return lowered[match[0]]
    prefixed = [v for v in options if v.startswith(name) or name.startswith(v)]
    return prefixed[0] if len(prefixed) == 1 else None


def unknown_argument_message(name: str, valid: Iterable[str]) -> str:
    """Return "unknown argument `perid`; did you mean `period`?" (or the valid names)."""
    options = sorted({str(v) for v in valid})
    close = closest_name(name, options)
    if close is not None:
        return f"unknown argument `{name}`; did you mean `{close}`?"
    if not options:
        return f"unknown argument `{name}`; this takes no arguments"
    shown = ", ".join(f"`{o}`" for o in options[:12]) + (", ..." if len(options) > 12 else "")
    return f"unknown argument `{name}`; valid arguments: {shown}"


def parse_problem(status: int, body: bytes | str, reason: str = "") -> Problem:
    """Return the RFC 9457 problem in an error answer's body, or one made from its status.

    The one reader of problem answers: service clients and the gateway both use it. A body
    that is a problem (or close to one: FastAPI's `{"detail": [...]}`) keeps its fields; any
    other body becomes `upstream_error` with the body's first 500 characters as detail.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        parsed = None
    if isinstance(parsed, dict) and ("detail" in parsed or "title" in parsed):
        fields = dict(parsed)
        detail = fields.get("detail")
        if not isinstance(detail, str):
            fields["detail"] = json.dumps(detail) if detail is not None else fields.get("title")
        fields.setdefault("title", reason or "Upstream error")
        fields.setdefault("code", f"http_{status}")
        if not isinstance(fields.get("status"), int):
            fields["status"] = status
        try:
            return Problem.model_validate(fields)
        except ValidationError:
            pass
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    return Problem(
        title=reason or "Upstream error",
        status=status,
        detail=text.strip()[:500] or reason or f"HTTP {status}",
        code="upstream_error",
    )
