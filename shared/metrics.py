"""Prometheus metrics of every service and the gateway (`prometheus-client`).

What is counted, and who counts it:

- `http_request_duration_seconds{service,operation}` (histogram) and
  `http_requests_total{service,operation,status}`: :class:`RequestMetrics`, the outermost
  middleware of every app built by `shared.app.service_app`; `operation` is the route's
  `operation_id` (`unmatched` for unknown paths, so a scan of random URLs adds no series).
- `http_requests_in_flight{service}` and `http_requests_rejected_total{service,reason}`
  (`body_too_large`, `rate_limited`, `overloaded`): the same middleware and the limits.
- `cache_lookups_total{level,result}` and `cache_hit_ratio{level}`: :func:`observe_cache`,
  called by `shared.cache` on every L1 and L2 lookup; the ratio is computed at scrape time.
- `provider_calls_total{provider,outcome}` and `provider_call_duration_seconds{provider}`:
  :func:`provider_call` / :func:`observe_provider_call` around each data-vendor call.
- `circuit_breaker_state{breaker}` (0 closed, 1 half-open, 2 open): :func:`set_breaker_state`.
- `jobs{service,status}` and `db_pool_connections{service,state}`: read when scraped, from
  the database the app's `/health` uses (:func:`scrape_stores`).

Several worker processes (`trading serve --workers N`) share one exposition through
prometheus-client's multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` names a folder the
workers write their samples to (set it before the processes start; `trading serve` does).
Values read at scrape time (jobs, pool use) are those of the worker that answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BreakerState = Literal["closed", "half_open", "open"]
BREAKER_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by operation id.",
    ["service", "operation"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "http_requests",
    "Requests answered, by operation id and status.",
    ["service", "operation", "status"],
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being handled now.",
    ["service"],
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "http_requests_rejected",
    "Requests turned away by a server limit (body_too_large, rate_limited, overloaded).",
    ["service", "reason"],
)
CONNECTIONS_CUT = Counter(
    "http_connections_cut",
    "Connections closed by the server for a slow or oversized request head or body.",
    ["reason"],
)
CACHE_LOOKUPS = Counter(
    "cache_lookups", "Cache lookups by level (l1, l2) and result (hit, miss).", ["level", "result"]
)
PROVIDER_CALLS = Counter(
    "provider_calls", "Calls to data vendors by outcome (ok, error).", ["provider", "outcome"]
)
PROVIDER_SECONDS = Histogram(
    "provider_call_duration_seconds",
    "Duration of data-vendor calls.",
    ["provider"],
    buckets=LATENCY_BUCKETS,
)
BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open (the worst worker's, with workers).",
    ["breaker"],
    multiprocess_mode="livemax",
)


# ------------------------------------------------------------------ hooks for other code
def observe_cache(level: str, hit: bool) -> None:
    """Count one cache lookup at level (`l1`, `l2`) as a hit or a miss."""
    CACHE_LOOKUPS.labels(level, "hit" if hit else "miss").inc()


def observe_provider_call(provider: str, *, ok: bool, seconds: float) -> None:
    """Count one data-vendor call and its duration."""
    PROVIDER_CALLS.labels(provider, "ok" if ok else "error").inc()
    PROVIDER_SECONDS.labels(provider).observe(seconds)


@contextmanager
def provider_call(provider: str) -> Iterator[None]:
    """Time the enclosed vendor call; an exception leaving the block counts as a failure."""
    t0 = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        observe_provider_call(provider, ok=ok, seconds=time.perf_counter() - t0)


def set_breaker_state(breaker: str, state: BreakerState) -> None:
    """Publish a circuit breaker's state (`closed`, `half_open`, `open`)."""
    BREAKER_STATE.labels(breaker).set(BREAKER_VALUES[state])


def publish_breaker(breaker: Any, old: str, new: str) -> None:
    """Publish a breaker's new state: an `on_change` hook for `shared.breaker.CircuitBreaker`."""
    if new in BREAKER_VALUES:
        BREAKER_STATE.labels(str(breaker.name)).set(BREAKER_VALUES[new])


def count_rejection(service: str, reason: str) -> None:
    """Count a request turned away by a limit."""
    REJECTED.labels(service, reason).inc()


def count_cut_connection(reason: str) -> None:
    """Count a connection the server closed for a slow or oversized request."""
    CONNECTIONS_CUT.labels(reason).inc()


# ------------------------------------------------------------------ request metrics
@dataclass(frozen=True)
class _RouteTable:
    """An app's operations as its OpenAPI document declares them, ready to match paths."""

    schema: Any
    framework: frozenset[str]
    routes: tuple[tuple[re.Pattern[str], dict[str, tuple[str, bool]]], ...]


def prepare_routes(app: Any) -> None:
    """Build app's route table now (at startup) rather than on its first request."""
    _route_table(app)


def _route_table(app: Any) -> _RouteTable | None:
    """Return app's route table, rebuilt when its OpenAPI document changes (FastAPI apps)."""
    openapi = getattr(app, "openapi", None)
    if not callable(openapi):
        return None
    schema = openapi()
    table: _RouteTable | None = getattr(app.state, "route_table", None)
    if table is not None and table.schema is schema:
        return table
    from starlette.routing import compile_path

    routes = []
    for path, operations in schema.get("paths", {}).items():
        regex, _, _ = compile_path(path)
        by_method = {
            method.upper(): (str(op.get("operationId") or path), "ops" in op.get("tags", []))
            for method, op in operations.items()
            if isinstance(op, dict)
        }
        routes.append((regex, by_method))
    framework = frozenset(
        url
        for url in (
            getattr(app, "openapi_url", None),
            getattr(app, "docs_url", None),
            getattr(app, "redoc_url", None),
            getattr(app, "swagger_ui_oauth2_redirect_url", None),
        )
        if url
    )
    table = _RouteTable(schema=schema, framework=framework, routes=tuple(routes))
    app.state.route_table = table
    return table


def allowed_methods(scope: Scope) -> list[str]:
    """Return every method the app's spec declares for the path scope asks for (with HEAD)."""
    from starlette.routing import get_route_path

    table = _route_table(scope.get("app"))
    if table is None:
        return []
    path = get_route_path(scope)
    methods: set[str] = set()
    literal: set[str] = set()  # a path without parameters wins, as in routing
    for regex, by_method in table.routes:
        if regex.match(path):
            methods.update(by_method)
            if "(?P<" not in regex.pattern:
                literal.update(by_method)
    if literal:
        methods = literal
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def route_of(scope: Scope) -> tuple[str, bool]:
    """Return (operation id, is an ops or framework route) of the route scope asks for.

    Operations are matched against the app's own OpenAPI document (the contract names them),
    and the answer is kept in the scope so every middleware asks once. Ops routes (tag `ops`)
    and framework pages (`/openapi.json`, `/docs`) are exempt from limits; unknown paths are
    `unmatched`. An app without an OpenAPI document (the gateway's) is matched by its
    routes' paths.
    """
    cached = scope.get("trading.route")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from starlette.routing import Match, get_route_path

    found: tuple[str, bool] = (UNMATCHED, False)
    app = scope.get("app")
    path = get_route_path(scope)
    method = str(scope.get("method", "GET")).upper()
    method = "GET" if method == "HEAD" else method
    table = _route_table(app) if app is not None else None
    if table is None:
        for route in getattr(app, "routes", ()):
            if route.matches(scope)[0] is Match.FULL:
                found = (str(getattr(route, "path", UNMATCHED)), False)
                break
    elif path in table.framework:
        found = (path, True)
    else:
        for regex, by_method in table.routes:
            if method in by_method and regex.match(path):
                found = by_method[method]
                break
    scope["trading.route"] = found
    return found


class RequestMetrics:
    """ASGI middleware: latency by operation, status counts, in-flight gauge, Server-Timing."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        in_flight = IN_FLIGHT.labels(self.service)
        in_flight.inc()

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ms = (time.perf_counter() - t0) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            in_flight.dec()
            operation, _ = route_of(scope)
            REQUEST_SECONDS.labels(self.service, operation).observe(time.perf_counter() - t0)
            REQUESTS.labels(self.service, operation, str(status)).inc()


# ------------------------------------------------------------------ scrape
@dataclass(frozen=True)
class _Families:
    """A collector that yields families made beforehand (one scrape's worth)."""

    families: tuple[Metric, ...]

    def collect(self) -> Iterable[Metric]:
        """Return the families."""
        return self.families


def multiprocess_dir() -> str | None:
    """Return the multiprocess folder when several workers share the metrics, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def _process_families() -> list[Metric]:
    """Collect this process's metrics, or every worker's in multiprocess mode."""
    if multiprocess_dir() is None:
        return list(REGISTRY.collect())
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return list(registry.collect())


def hit_ratios(families: Iterable[Metric]) -> Metric:
    """Return `cache_hit_ratio{level}`: hits / lookups per level, from the lookup counters."""
    counts: dict[str, dict[str, float]] = {}
    for family in families:
        if family.name != "cache_lookups":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                level = sample.labels.get("level", "")
                result = sample.labels.get("result", "")
                by_level = counts.setdefault(level, {})
                by_level[result] = by_level.get(result, 0.0) + sample.value
    gauge = GaugeMetricFamily(
        "cache_hit_ratio", "Share of cache lookups that hit, per level.", labels=["level"]
    )
    for level, by_result in sorted(counts.items()):
        total = by_result.get("hit", 0.0) + by_result.get("miss", 0.0)
        if total:
            gauge.add_metric([level], by_result.get("hit", 0.0) / total)
    return gauge


def render(extra: Iterable[Metric] = ()) -> bytes:
    """Return the Prometheus text exposition of every metric, plus extra (scrape-time) ones."""
    families = _process_families()
    families.extend(extra)
    families.append(hit_ratios(families))
    return generate_latest(_Families(tuple(families)))  # type: ignore[arg-type]


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a finished worker's live gauges from the multiprocess folder (no-op otherwise)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


async def scrape_stores(db: Any, *, service: str, timeout_s: float) -> list[Metric]:
    """Return pool use of db's engine and the jobs table counted by service and status.

    A database that does not answer within timeout_s (or has no jobs table yet) gives no
    job counts; the scrape itself never fails.
    """
    pool = GaugeMetricFamily(
        "db_pool_connections",
        "Database connections of this process's pool: checked_out, idle, overflow, size, max.",
        labels=["service", "state"],
    )
    engine_pool = getattr(getattr(db, "engine", None), "pool", None)
    for state, value in _pool_use(engine_pool).items():
        pool.add_metric([service, state], value)
    jobs = GaugeMetricFamily(
        "jobs", "Jobs in the database by service and status.", labels=["service", "status"]
    )
    try:
        async with asyncio.timeout(timeout_s):
            for job_service, status, count in await _count_jobs(db):
                jobs.add_metric([job_service, status], count)
    except Exception as e:  # a down database must not fail the scrape
        log.debug("jobs not counted for /metrics: %s", type(e).__name__)
    return [pool, jobs]


def _pool_use(pool: Any) -> dict[str, float]:
    """Return the use of a SQLAlchemy queue pool (nothing for pools without counters)."""
    use: dict[str, float] = {}
    for state, method in (
        ("checked_out", "checkedout"),
        ("idle", "checkedin"),
        ("overflow", "overflow"),
        ("size", "size"),
    ):
        fn = getattr(pool, method, None)
        if callable(fn):
            use[state] = max(0.0, float(fn()))  # a queue pool's overflow() counts from -size
    max_overflow = getattr(pool, "_max_overflow", None)
    if "size" in use and isinstance(max_overflow, int) and max_overflow >= 0:
        use["max"] = use["size"] + max_overflow
    return use


async def _count_jobs(db: Any) -> list[tuple[str, str, int]]:
    """Return (service, status, count) rows of the jobs table."""
    from sqlalchemy import func, select

    from shared.tables import Job

    table = Job.__table__  # type: ignore[attr-defined]
    query = select(table.c.service, table.c.status, func.count()).group_by(
        table.c.service, table.c.status
    )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [(str(s), str(st), int(n)) for s, st, n in rows]
