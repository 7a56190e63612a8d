"""The skeleton every service app is built on: logging, problem details, limits, metrics, auth.

A service's `create_app(settings)` calls `service_app(...)`, includes its routers, and owns
its lifespan. Logging is configured here, in the factory, so `uvicorn --factory
services.<name>.app:create_app` logs (masked, at LOG_LEVEL) exactly as `trading serve` does.

Every app gets, outermost first: request metrics (latency by operation id, `Server-Timing`),
the body size limit (413), the failed-authentication limit (429 per address, when
API_TOKEN is set), bearer auth (401, when API_TOKEN is set), the rate limit (429 +
`Retry-After`, never for the services' own calls), the concurrency limit (503 +
`Retry-After`), then the routes; plus
`GET /metrics` (tag `ops`) and, in its OpenAPI document, the 413/429/503 answers those limits
give on every operation. Ops routes (tag `ops`: `/health`, `/metrics`) are never rate or
concurrency limited and need no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from shared.api import declare_limit_responses, install_bearer_auth, install_error_handlers
from shared.config import BaseServiceSettings
from shared.health import HEALTH_PATH
from shared.jobs.routes import IdempotencyKey
from shared.limits import BodyLimit, ConcurrencyLimit, Slots
from shared.logging import configure_logging
from shared.metrics import (
    CONTENT_TYPE,
    METRICS_PATH,
    RequestMetrics,
    mark_process_dead,
    prepare_routes,
    render,
    scrape_stores,
)
from shared.ratelimit import AuthFailureLimit, RateLimit, RateLimiter
from shared.strict import StrictQuery

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({HEALTH_PATH, METRICS_PATH, "/openapi.json"})
_SERVICE_MODULE = re.compile(r"^services\.([a-z][a-z0-9_]*)\.")


def service_name(title: str, lifespan: Callable[..., Any]) -> str:
    """Return the short name metrics label a service with (`services.<name>.app` -> name)."""
    match = _SERVICE_MODULE.match(getattr(lifespan, "__module__", "") or "")
    if match:
        return match.group(1)
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "service"


def service_app(
    *,
    title: str,
    description: str,
    settings: BaseServiceSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    version: str = "1.0.0",
    name: str | None = None,
) -> FastAPI:
    """Return a FastAPI app with the platform's logging, errors, limits, metrics and auth.

    name labels the service's metrics (default: `<name>` of `services.<name>.app`).
    """
    configure_logging(settings.log_level)
    for unknown in settings.unknown_settings():
        log.warning("ignoring %s: no %s setting has that name", unknown, title)
    name = name or service_name(title, lifespan)
    limiter = RateLimiter(
        per_minute=settings.rate_limit_per_minute,
        redis_url=settings.redis_url,
        prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_s,
    )

    @asynccontextmanager
    async def with_limits(app: FastAPI) -> AsyncIterator[Any]:
        prepare_routes(app)
        async with limiter.running(), lifespan(app) as state:
            try:
                yield state
            finally:
                mark_process_dead()

    app = FastAPI(title=title, version=version, description=description, lifespan=with_limits)
    app.state.service_name = name
    app.state.rate_limiter = limiter
    app.state.slots = Slots(
        settings.max_concurrent_requests,
        max_queued=settings.max_queued_requests,
        queue_timeout_s=settings.queue_timeout_s,
    )
    install_error_handlers(app)
    # add_middleware puts each one outside those added before: innermost first.
    app.add_middleware(StrictQuery)
    app.add_middleware(
        ConcurrencyLimit,
        slots=app.state.slots,
        retry_after_s=settings.overload_retry_after_s,
        service=name,
    )
    token_set = settings.api_token is not None and bool(settings.api_token.get_secret_value())
    service_token = settings.service_token.get_secret_value() if settings.service_token else ""
    app.add_middleware(
        RateLimit,
        limiter=limiter,
        trust_token=token_set,
        service=name,
        service_token=service_token.encode() or None,
    )
    install_bearer_auth(
        app, settings.api_token, open_paths=set(OPEN_PATHS), service_token=settings.service_token
    )
    if token_set:
        app.add_middleware(
            AuthFailureLimit, per_minute=settings.auth_failures_per_minute, service=name
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, service=name)
    app.add_middleware(IdempotencyKey)
    app.add_middleware(RequestMetrics, service=name)
    install_metrics(app, timeout_s=settings.health_timeout_s)
    _declare_limits_in_spec(app)
    return app


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, Any] | None, *, name: str) -> AsyncIterator[None]:
    """Run work (if any) as a task while the block runs; cancel it and wait for it at exit.

    For a lifespan's loops (a scheduler, a watcher): put it inside the `try` whose `finally`
    closes what the loop uses, so the loop stops first.
    """
    if work is None:
        yield
        return
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def install_metrics(app: FastAPI, *, timeout_s: float) -> None:
    """Add `GET /metrics` (operation `metrics`, tag `ops`): Prometheus text format.

    Database pool use and job counts come from the stores `/health` probes (see
    `shared.health.install_health`), read when scraped within timeout_s.
    """

    @app.get(
        METRICS_PATH,
        operation_id="metrics",
        tags=["ops"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics(request: Request) -> Response:
        """Return the service's metrics in Prometheus text format (for a scraper, not a model)."""
        extra = []
        stores = getattr(request.app.state, "stores", None)
        if stores is not None:
            try:
                db, _ = stores(request)
            except AttributeError:  # the lifespan has not built the stores yet
                db = None
            if db is not None:
                extra = await scrape_stores(
                    db, service=request.app.state.service_name, timeout_s=timeout_s
                )
        return Response(render(extra), media_type=CONTENT_TYPE)


def _declare_limits_in_spec(app: FastAPI) -> None:
    """Make app.openapi() declare the 413/429/503 answers of the limits on every operation."""
    build = app.openapi
    declared: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's own, cached until the routes change
        if not declared or declared[0] != id(schema):
            declare_limit_responses(schema)
            declared[:] = [id(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
