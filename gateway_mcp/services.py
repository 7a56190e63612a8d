"""The services behind the gateway: found from `openapi/*.json`, reached through one transport.

Embedded and remote mode differ in one place only, the innermost transport: an in-process
ASGI transport over `services.<name>.app:create_app()` or a network connection pool to the
service's URL. Everything above it (auth header, "service down" answers, following jobs,
error mapping, result sizing) is the same code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from prometheus_client import Counter, Histogram

from gateway_mcp.jobs import CALL_DEADLINE, follow_job, status_url
from gateway_mcp.links import ToolTable
from gateway_mcp.settings import GatewaySettings
from shared.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from shared.http import app_lifespan, register_local_app
from shared.jobs import JobStatus, cancel_path
from shared.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

AppFactory = Callable[[], Any]
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
WAIT_PARAM = "wait_s"
# The most a continuing `get_job` call is asked to wait (the services cap it at 30 s).
MAX_WAIT_S = 30.0

UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests",
    "Requests the gateway sent to a service, by status (`timeout`, `unreachable`, `down` when "
    "no answer came; `budget` when the gateway cut it at the call budget).",
    ["service", "status"],
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_request_duration_seconds",
    "Time a service took to answer the gateway.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)


def discover_specs(spec_dir: Path) -> dict[str, dict[str, Any]]:
    """Return every `<name>.json` OpenAPI document in spec_dir by service name, sorted."""
    specs: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(spec_dir).glob("*.json")):
        name = path.stem
        if not SERVICE_NAME.match(name):
            log.warning("skipping %s: a service name is lower_snake_case", path)
            continue
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.error("skipping %s: not a readable JSON document (%s)", path, e)
            continue
        if not isinstance(spec, dict) or "paths" not in spec:
            log.error("skipping %s: not an OpenAPI document", path)
            continue
        specs[name] = spec
    return specs


def import_app_factory(name: str) -> AppFactory:
    """Return `services.<name>.app:create_app` (the naming convention of every service)."""
    module = importlib.import_module(f"services.{name}.app")
    factory = getattr(module, "create_app", None)
    if not callable(factory):
        raise ImportError(f"services.{name}.app has no create_app()")
    return factory  # type: ignore[no-any-return]


def _problem(request: httpx2.Request, error: AppError) -> httpx2.Response:
    """Answer request with error as a problem-details response, as a service would."""
    body = error.to_problem().model_dump(mode="json", exclude_none=True)
    return httpx2.Response(
        error.status,
        content=json.dumps(body).encode(),
        headers={"content-type": PROBLEM_MEDIA_TYPE},
        request=request,
    )


async def _report_progress(progress: float, total: float | None, message: str | None) -> None:
    """Send an MCP progress notification for the current tool call, if the client asked."""
    from fastmcp.server.dependencies import get_context

    try:
        ctx = get_context()
    except RuntimeError:
        return
    await ctx.report_progress(progress, total, message)


@dataclass
class Service:
    """One service behind the gateway: its spec, its HTTP client and whether it is up."""

    name: str
    spec: dict[str, Any]
    base_url: str
    settings: GatewaySettings
    embedded: bool = False
    app_factory: AppFactory | None = None
    app: Any = None
    down_reason: str | None = None
    client: httpx2.AsyncClient = field(init=False)
    transport: ServiceTransport = field(init=False)
    tools: ToolTable = field(init=False)

    def __post_init__(self) -> None:
        self.tools = ToolTable(self.name, self.spec)
        self.transport = ServiceTransport(self)
        headers = {}
        token = self.settings.service_token
        if token is not None and token.get_secret_value():
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.client = httpx2.AsyncClient(
            base_url=self.base_url,
            transport=self.transport,
            headers=headers,
            timeout=self.settings.service_timeout_s,
        )

    def build_app(self) -> None:
        """Create the embedded app (once); a failure marks the service down, not the gateway."""
        if self.app_factory is None or self.app is not None:
            return
        try:
            self.app = self.app_factory()
            register_local_app(self.name, self.app)  # co-hosted services call it in-process
        except Exception as e:  # any failure of a service must leave the others serving
            self.down_reason = f"its app could not be created ({type(e).__name__}: {e})"
            log.exception("%s service: app factory failed", self.name)

    async def start(self, stack: AsyncExitStack) -> None:
        """Open the connection; in embedded mode also run the app's lifespan on stack."""
        if self.embedded:
            self.build_app()
            if self.app is None:
                return
            try:
                await stack.enter_async_context(app_lifespan(self.app))
            except Exception as e:  # a failed startup marks this service down only
                self.down_reason = f"it failed to start ({type(e).__name__}: {e})"
                log.exception("%s service: startup failed", self.name)
                return
            inner: httpx2.AsyncBaseTransport = httpx2.ASGITransport(
                app=self.app, raise_app_exceptions=False
            )
        else:
            inner = httpx2.AsyncHTTPTransport()
        self.down_reason = None
        self.transport.open(inner)
        stack.push_async_callback(self.transport.close)


class ServiceTransport(httpx2.AsyncBaseTransport):
    """The gateway's one door to a service: turns failures into problems and follows jobs."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._inner: httpx2.AsyncBaseTransport | None = None

    def open(self, inner: httpx2.AsyncBaseTransport) -> None:
        """Start sending through inner (ASGI app or network pool)."""
        self._inner = inner

    async def close(self) -> None:
        """Stop sending; close the network pool if any."""
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        t0 = time.perf_counter()
        response, status = await self._send_once(request)
        UPSTREAM_REQUESTS.labels(self.service.name, status).inc()
        UPSTREAM_SECONDS.labels(self.service.name).observe(time.perf_counter() - t0)
        return response

    async def _send_once(self, request: httpx2.Request) -> tuple[httpx2.Response, str]:
        """Return the service's answer (or the problem standing for none) and a status label."""
        svc = self.service
        if self._inner is None:
            reason = svc.down_reason or "the gateway has not started it"
            error: AppError = ServiceUnavailableError(
                f"The {svc.name} service is not available: {reason}. "
                "The gateway's other services are unaffected."
            )
            return _problem(request, error), "down"
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TimeoutException as e:
            error = ServiceTimeoutError(
                f"The {svc.name} service at {svc.base_url} did not answer within "
                f"{svc.settings.service_timeout_s:g} s ({type(e).__name__})."
            )
            return _problem(request, error), "timeout"
        except httpx2.TransportError as e:
            error = ServiceUnavailableError(
                f"The {svc.name} service is unreachable at {svc.base_url} "
                f"({type(e).__name__}: {e}). The gateway's other services are unaffected."
            )
            return _problem(request, error), "unreachable"
        return response, str(response.status_code)

    def wait_s(self) -> float:
        """Return how long a continuing `get_job` call should wait: within the call budget."""
        budget = self.service.settings.call_budget_s
        return round(max(0.5, min(MAX_WAIT_S, budget * 0.75)), 1)

    def job_handle(self, job: JobStatus, url: httpx2.URL) -> dict[str, Any]:
        """Return the answer for a job still running when the call budget ran out."""
        budget = self.service.settings.call_budget_s
        path = url.raw_path.decode().split("?")[0]
        get_call = self.service.tools.call("GET", path, wait_s=self.wait_s())
        cancel_call = self.service.tools.call("POST", cancel_path(path))
        return {
            "job": {
                "id": str(job.id),
                "status": job.status,
                "progress": job.progress.model_dump(mode="json"),
            },
            "continue_with": get_call,
            "cancel_with": cancel_call,
            "note": f"The job is still {job.status} after the {budget:g} s call budget and runs "
            f"on. Call `{get_call}` to wait for it: it answers the result once the job "
            "succeeded (call it again while it runs). The same call with the same arguments "
            "answers this job too; it does not start another.",
        }

    def _bounded_wait(self, request: httpx2.Request) -> httpx2.Request:
        """Cap a `wait_s` query argument to what is left of the call budget."""
        raw = request.url.params.get(WAIT_PARAM)
        deadline = CALL_DEADLINE.get()
        if raw is None or deadline is None:
            return request
        try:
            asked = float(raw)
        except ValueError:
            return request  # the service names the bad value
        left = max(0.0, deadline - time.monotonic() - 0.5)
        if asked <= left:
            return request
        request.url = request.url.copy_set_param(WAIT_PARAM, f"{left:.1f}")
        return request

    def over_budget(self, request: httpx2.Request) -> httpx2.Response:
        """Return the problem answering a request cut at the end of the call budget."""
        budget = self.service.settings.call_budget_s
        call = self.service.tools.call(request.method, str(request.url))
        tool = (call or "the same tool").removesuffix("()")  # a body's arguments are not in it
        error = ServiceTimeoutError(
            f"`{tool}` did not answer within the gateway's {budget:g} s call budget "
            "(GATEWAY_CALL_BUDGET_S): the request was cut and the service stopped its work. "
            "Call it again with less work in one call (a shorter date range, fewer symbols, "
            "combinations or runs); work the service expects to take long starts as a job, "
            "whose handle comes back in time."
        )
        return _problem(request, error)

    async def _send_within_budget(self, request: httpx2.Request) -> httpx2.Response:
        """Send request; past the call's deadline, cut it (the service sees the client go)."""
        deadline = CALL_DEADLINE.get()
        if deadline is None:
            return await self._send(request)
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            response = await self._send(request)
            await response.aread()  # a streamed body is part of the answer, and of the budget
            return response
        UPSTREAM_REQUESTS.labels(self.service.name, "budget").inc()
        log.info("%s %s cut at the call budget", request.method, request.url.path)
        return self.over_budget(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send a request within the call budget; follow a 202 job answer, reporting progress.

        A request still unanswered when the call's deadline (CALL_DEADLINE) passes is cut:
        the answer is a 504 problem naming the tool, in time for the client, and the service
        sees its client go (an embedded app's task is cancelled; a remote connection closes),
        which stops its work.
        """
        response = await self._send_within_budget(self._bounded_wait(request))
        if response.status_code != 202:
            return response
        await response.aread()
        url = status_url(request, response)
        if url is None:
            return response
        settings = self.service.settings
        return await follow_job(
            self._send,
            request,
            url,
            report=_report_progress,
            poll_interval_s=settings.job_poll_interval_s,
            timeout_s=settings.job_timeout_s,
            service=self.service.name,
            handle=self.job_handle,
        )


def open_services(
    settings: GatewaySettings, app_factories: Mapping[str, AppFactory] | None = None
) -> list[Service]:
    """Return a Service for every spec in settings.spec_dir (nothing is started yet)."""
    services = []
    for name, spec in discover_specs(settings.spec_dir).items():
        if settings.mode == "remote":
            services.append(Service(name, spec, settings.service_url(name), settings))
            continue
        factory = (app_factories or {}).get(name)
        down = None
        if factory is None:
            try:
                factory = import_app_factory(name)
            except Exception as e:  # a broken service must not take the gateway down
                down = f"services.{name}.app cannot be imported ({type(e).__name__}: {e})"
                log.error("%s service: %s", name, down)
        svc = Service(name, spec, f"http://{name}", settings, embedded=True, app_factory=factory)
        svc.down_reason = down
        svc.build_app()
        services.append(svc)
    return services


async def probe_service(service: Service, timeout_s: float) -> dict[str, Any]:
    """Ask one service's `/health` now; return its state for the gateway's `/health`."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await service.client.get("/health")
    except (TimeoutError, httpx2.HTTPError) as e:
        return {"status": "unavailable", "detail": f"/health failed ({type(e).__name__})"}
    state: dict[str, Any] = {"http_status": response.status_code}
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200:
        reported = body.get("status") if isinstance(body, dict) else None
        state["status"] = reported if reported in {"ok", "degraded"} else "ok"
    else:
        state["status"] = "unavailable"
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            state["detail"] = body["detail"]
    if isinstance(body, dict):
        state.update({k: v for k, v in body.items() if k in {"database", "redis"}})
    return state


async def gateway_health(services: list[Service], timeout_s: float) -> dict[str, Any]:
    """Return the gateway's health: each service's state and an overall status.

    `ok` when every service is; `degraded` when some service is degraded or down but one
    still answers; `unavailable` when none does (the gateway can then do nothing useful).
    """
    states = await asyncio.gather(*(probe_service(s, timeout_s) for s in services))
    by_name = {s.name: state for s, state in zip(services, states, strict=True)}
    usable = [st for st in states if st["status"] in {"ok", "degraded"}]
    if not usable:
        status = "unavailable"
    elif len(usable) == len(states) and all(st["status"] == "ok" for st in states):
        status = "ok"
    else:
        status = "degraded"
    return {"status": status, "services": by_name}
