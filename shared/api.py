"""FastAPI plumbing every service shares: problem-details handlers, error docs, auth, paging."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    BadRequestError,
    FieldIssue,
    Problem,
    UnauthorizedError,
    ValidationProblemError,
    new_error_id,
)
from shared.limits import request_path
from shared.strict import unknown_field_message

log = logging.getLogger(__name__)


class Page(BaseModel):
    """Which rows of a list this answer holds."""

    model_config = ConfigDict(frozen=True)

    total: int
    limit: int
    offset: int
    returned: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")

    @classmethod
    def of(cls, total: int, limit: int, offset: int, returned: int) -> Page:
        """Return the page of `returned` rows from offset of total (limit asked)."""
        end = offset + returned
        nxt = end if end < total else None
        return cls(total=total, limit=limit, offset=offset, returned=returned, next_offset=nxt)


# A paged list's query parameters (every service's lists page alike; `Page` answers them).
Limit = Annotated[int, Query(ge=1, le=1000, description="Most rows to return.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip first.")]


# Generic wording; each service words what a status means for its own resources (the words
# become the MCP tool descriptions, so "the symbol" beats "the resource" where it is true).
DEFAULT_WORDING: Mapping[int, str] = MappingProxyType(
    {
        400: "The request body is not valid JSON or not UTF-8.",
        401: "A bearer token is required (when the service has one configured).",
        404: "The resource does not exist.",
        409: "The resource is not in a state that allows this.",
        413: "The request body is larger than the service accepts (`MAX_BODY_BYTES`).",
        422: "An input is invalid; `field` names it and `errors` lists every invalid field.",
        429: "Rate limit reached (requests per minute per client and operation); retry after "
        "the `Retry-After` header's seconds.",
        502: "An upstream the service depends on could not be reached or answered nonsense.",
        503: "A backing store (database) or service is unavailable, or the service is at its "
        "concurrency limit (then `Retry-After` says when to retry).",
        504: "An upstream the service depends on did not answer in time.",
    }
)


def problem_responses(
    *codes: int, wording: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI `responses` entries documenting problem-details answers.

    wording overrides the generic description of a status for one service.
    """
    words = {**DEFAULT_WORDING, **(wording or {})}
    return {
        code: {
            "model": Problem,
            "description": words.get(code, "Error."),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


class ProblemDocs:
    """One service's problem documentation: `errors(401, 404)` with the service's wording."""

    def __init__(self, wording: Mapping[int, str]) -> None:
        self.wording = MappingProxyType(dict(wording))

    def __call__(self, *codes: int) -> dict[int | str, dict[str, Any]]:
        """Return OpenAPI `responses` entries for codes, worded for this service."""
        return problem_responses(*codes, wording=self.wording)


RETRY_AFTER_HEADER: Mapping[str, Any] = MappingProxyType(
    {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
)


def _problem_content() -> dict[str, Any]:
    ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {"application/json": dict(ref), PROBLEM_MEDIA_TYPE: dict(ref)}


def declare_limit_responses(
    schema: dict[str, Any], wording: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Declare in an OpenAPI document the answers the server limits give, on every operation.

    Every operation but the ops routes (tag `ops`) may answer 429 (rate limit) and 503
    (overload, or a store down), both with `Retry-After`; one with a request body may also
    answer 400 (not JSON) and 413 (too large). Declarations a route made itself keep their
    wording and gain the header.
    Returns schema, changed in place.
    """
    words = {**DEFAULT_WORDING, **(wording or {})}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in components:
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "ops" in operation.get("tags", []):
                continue
            responses = operation.setdefault("responses", {})
            codes = [429, 503] + ([400, 413] if "requestBody" in operation else [])
            for code in codes:
                entry = responses.setdefault(
                    str(code), {"description": words[code], "content": _problem_content()}
                )
                if code in (429, 503):
                    entry.setdefault("headers", {})["Retry-After"] = dict(RETRY_AFTER_HEADER)
    return schema


async def answer_off_loop(build: Callable[[], BaseModel]) -> Response:
    """Build an answer model and its JSON in a worker thread; return it as the response.

    For answers of many rows: building hundreds of rows, FastAPI's second validation
    against the response model and its JSON encoding held the event loop for tens of ms a
    request, and every other client's request (a cached price: 1 ms) waited behind them.

    The route keeps its `response_model` (the spec is unchanged); returning a Response
    skips FastAPI's re-validation, which the model built here has passed already. The
    bytes equal FastAPI's own encoding of the model (by alias, every field).
    """

    def work() -> bytes:
        return build().model_dump_json(by_alias=True).encode()

    return Response(await asyncio.to_thread(work), media_type="application/json")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """Render a problem as an application/problem+json response."""
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field_name(loc: tuple[Any, ...], body: Any = None) -> str:
    """Return the JSON path of an error location: `strategy.params.fast`, `symbols[1]`.

    Pydantic puts the tag of a discriminated union (`strategy.sma_crossover.params`) and
    validator names into the location; walking the request body alongside drops every
    segment that is not a key or an index of what the client sent.
    """
    parts = list(loc)
    node = None
    if parts and parts[0] in {"query", "path", "body", "header", "cookie"}:
        node = body if parts[0] == "body" else None
        parts = parts[1:]
    out = ""
    for i, p in enumerate(parts):
        if isinstance(p, int):
            out += f"[{p}]"
            node = node[p] if isinstance(node, list) and -len(node) <= p < len(node) else None
            continue
        key = str(p)
        if isinstance(node, dict) and key not in node:
            rest = parts[i + 1 :]
            if rest and (key in node.values() or "[" in key or "-" in key or str(rest[0]) in node):
                continue  # a union's tag or a validator's name: not in the client's JSON
        out += f".{key}" if out else key
        node = node.get(key) if isinstance(node, dict) else None
    return out or "body"


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    error_id = None
    if exc.status >= 500:
        # The answer says what failed in the user's terms; hosts, paths and driver messages
        # go to the log, under an id the answer carries.
        error_id = new_error_id()
        cause = exc.__cause__
        log.warning(
            "error_id=%s %s %s -> %s %s: %s%s%s",
            error_id,
            request.method,
            request.url.path,
            exc.status,
            exc.code,
            exc.detail,
            f" | {exc.log_detail}" if exc.log_detail else "",
            f" | cause: {type(cause).__name__}: {cause}" if cause is not None else "",
        )
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after_s)}
    problem = exc.to_problem(instance=request.url.path, error_id=error_id)
    return problem_response(problem, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues: list[FieldIssue] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            # Not JSON at all: a 400, never a 422 naming a character offset as the field.
            position = loc[1] if len(loc) > 1 else None
            where = f" (at character {position})" if isinstance(position, int) else ""
            bad = BadRequestError(f"The request body is not valid JSON{where}.", field="body")
            return problem_response(bad.to_problem(instance=request.url.path))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":  # name the field meant, not just "extra"
            msg = unknown_field_message(request.scope, loc, getattr(exc, "body", None)) or msg
        if err.get("type") == "value_error":  # a validator's own words: drop pydantic's prefix
            msg = msg.removeprefix("Value error, ")
        issues.append(FieldIssue(field=_field_name(loc, getattr(exc, "body", None)), message=msg))
    first = issues[0] if issues else FieldIssue(field="body", message="invalid request")
    detail = "; ".join(f"{i.field}: {i.message}" for i in issues) or "invalid request"
    error = ValidationProblemError(detail, field=first.field, errors=issues)
    return problem_response(error.to_problem(instance=request.url.path))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        413: "Payload too large",
    }
    codes = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }
    problem = Problem(
        type="about:blank",
        title=titles.get(exc.status_code, "HTTP error"),
        status=exc.status_code,
        detail=str(exc.detail),
        code=codes.get(exc.status_code, "http_error"),
        instance=request.url.path,
    )
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path; the path
        # may have more (GET and DELETE /results/{id} are two routes): name them all.
        from shared.metrics import allowed_methods

        methods = allowed_methods(request.scope)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return problem_response(problem, headers or None)


ERROR_ID_ATTRIBUTE = "trading_error_id"


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Log an unhandled error once, under one id, and answer a complete 500 problem.

    An app mounted in another (`trading serve`) may see the same exception again in the
    outer app's handler when the inner one could not finish its answer: the id rides on the
    exception, so the error is logged once and both answers (if any) carry the same id.
    """
    error_id = getattr(exc, ERROR_ID_ATTRIBUTE, None)
    if error_id is None:
        error_id = new_error_id()
        with contextlib.suppress(AttributeError):  # a type with __slots__: id not carried
            setattr(exc, ERROR_ID_ATTRIBUTE, error_id)
        log.error(
            "error_id=%s unhandled error on %s %s",
            error_id,
            request.method,
            request.url.path,
            exc_info=exc,
        )
    problem = Problem(
        title="Internal error",
        status=500,
        detail="The server failed unexpectedly; the error was logged.",
        code="internal_error",
        instance=request.url.path,
        error_id=error_id,
    )
    return problem_response(problem)


class AnsweredErrors:
    """ASGI wrapper around an app's whole stack: an error already answered ends there.

    Starlette's outermost middleware renders an unhandled error with the app's 500 handler
    and then raises it again, "so servers can log it": uvicorn then logs the traceback a
    second time and closes the connection, so the client's next request on the same
    keep-alive connection is reset. An error whose answer went out whole is done: it was
    logged (once, under the answer's error id) and the connection stays usable. An error
    whose answer was cut short still propagates: the server must close that connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; swallow an error after its complete answer was sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def watch(message: Message) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not complete:
                raise


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of the app as RFC 9457 problem details.

    An unexpected error is logged once with an error id, answered as a complete 500 problem,
    and leaves the connection open for the client's next request.
    """
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return AnsweredErrors(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def install_bearer_auth(
    app: FastAPI,
    token: SecretStr | None,
    *,
    open_paths: set[str],
    service_token: SecretStr | None = None,
) -> None:
    """Require `Authorization: Bearer <token>` on every path but open_paths, when a token is set.

    service_token (the services' own, `SERVICE_TOKEN`) is accepted as well. open_paths are
    compared with the path inside the app, so `/health` stays open when the app is mounted
    under a prefix (`trading serve`'s `/market/health`).
    """
    if token is None or not token.get_secret_value():
        return
    tokens = [token.get_secret_value().encode()]
    if service_token is not None and service_token.get_secret_value():
        tokens.append(service_token.get_secret_value().encode())
    app.add_middleware(BearerAuth, tokens=tuple(tokens), open_paths=frozenset(open_paths))


class BearerAuth:
    """ASGI middleware: 401 problem details unless the request carries a bearer token."""

    def __init__(self, app: ASGIApp, tokens: tuple[bytes, ...], open_paths: frozenset[str]) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authorised (or open) request on; answer 401 to any other."""
        if scope["type"] != "http" or get_route_path(scope) in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    given = b""
                break
        # every token compared, in constant time: which one matched takes no longer
        matched = [hmac.compare_digest(given, token) for token in self.tokens]
        if given and any(matched):
            await self.app(scope, receive, send)
            return
        err = UnauthorizedError("Missing or wrong bearer token")
        response = problem_response(
            err.to_problem(instance=request_path(scope)), {"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)


def install_server_timing(app: FastAPI) -> None:
    """Add a `Server-Timing: app;dur=<ms>` header measuring time spent inside the app.

    Apps built by `shared.app.service_app` get it from `shared.metrics.RequestMetrics`.
    """
    from shared.metrics import RequestMetrics

    app.add_middleware(RequestMetrics, service=app.title)
