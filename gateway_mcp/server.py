"""One FastMCP server from every spec in `openapi/`: each service mounted under its name.

`build_gateway(settings)` reads `openapi/<name>.json` for every service, connects to the
service (embedded: its app in-process; remote: its URL), builds the service's tools with
FastMCP's OpenAPI provider (names from `operation_id`s, descriptions and argument schemas
from the spec; ops routes such as health and metrics excluded by route maps) and adds them
under `namespace=<name>`: `market_get_price`, `backtest_run_backtest`, ...
"""

from __future__ import annotations

import hmac
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.middleware import Middleware as McpMiddleware
from fastmcp.server.middleware import MiddlewareContext
from fastmcp.server.providers import Provider
from fastmcp.server.providers.openapi import MCPType, OpenAPIProvider, RouteMap
from fastmcp.tools.base import Tool
from fastmcp.utilities.openapi import HTTPRoute
from prometheus_client import Counter, Histogram
from pydantic import SecretStr
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_mcp.context import share_descriptions
from gateway_mcp.guide import INSTRUCTIONS, install_guide
from gateway_mcp.origins import OriginGuard
from gateway_mcp.results import Limits
from gateway_mcp.services import AppFactory, Service, gateway_health, open_services
from gateway_mcp.settings import GatewaySettings
from gateway_mcp.tools import GatewayTools, gateway_tool
from shared.limits import BodyLimit
from shared.metrics import CONTENT_TYPE, LATENCY_BUCKETS, RequestMetrics, render
from shared.ratelimit import AuthFailureLimit
from shared.server import CONFIG_ATTRIBUTE, HttpLimits, uvicorn_options

log = logging.getLogger(__name__)

# Operational routes are for orchestrators, not models: never tools, whatever the service.
OPS_PATHS = r"^/(health|healthz|livez|readyz|metrics|ping)(/.*)?$"
ROUTE_MAPS = [
    RouteMap(tags={"ops"}, mcp_type=MCPType.EXCLUDE),
    RouteMap(tags={"internal"}, mcp_type=MCPType.EXCLUDE),
    RouteMap(pattern=OPS_PATHS, mcp_type=MCPType.EXCLUDE),
    RouteMap(mcp_type=MCPType.TOOL),  # every other operation, GET included, is a tool
]

TOOL_CALLS = Counter(
    "mcp_tool_calls", "MCP tool calls by tool and outcome (ok, error).", ["tool", "outcome"]
)
TOOL_SECONDS = Histogram(
    "mcp_tool_call_duration_seconds",
    "Duration of MCP tool calls (jobs included).",
    ["tool"],
    buckets=(*LATENCY_BUCKETS, 60, 300, 900),
)

PLATFORM_NAME = "trading-platform"


def platform_version() -> str:
    """Return the installed platform's version (the distribution's, else the source tree's)."""
    try:
        return importlib.metadata.version(PLATFORM_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+source"


def instructions(services: list[Service]) -> str:
    """Return the server instructions: one line per service, from its spec's title."""
    groups = "\n".join(
        f"- `{s.name}_*`: {s.spec.get('info', {}).get('title', s.name)}" for s in services
    )
    return INSTRUCTIONS.format(groups=groups or "- (no service specs found)")


def build_service_provider(
    service: Service, limits: Limits, docs: dict[str, dict[str, Any]] | None = None
) -> Provider:
    """Return one service's tools: its spec through FastMCP's OpenAPI provider, gateway-wrapped.

    This is what `FastMCP.from_openapi` builds, minus the server around it: the gateway adds
    the provider under the service's namespace itself, which is what `mount(namespace=)`
    does with a server, without a second server's dispatch on every call (~0.35 ms).
    """
    made: list[tuple[HTTPRoute, Any]] = []
    provider = OpenAPIProvider(
        openapi_spec=service.spec,
        client=service.client,
        route_maps=ROUTE_MAPS,
        mcp_component_fn=lambda route, component: made.append((route, component)),
    )
    tools = {
        component.name: gateway_tool(
            component, route, service.name, limits, service.spec, docs=docs, table=service.tools
        )
        for route, component in made
        if isinstance(component, Tool)
    }
    return provider.wrap_transform(GatewayTools(shared_arguments_once(tools, service.name)))


def shared_arguments_once(tools: dict[str, Tool], service: str) -> dict[str, Tool]:
    """Return tools with each argument they share described once, in the first that takes it."""
    schemas, described_in = share_descriptions({n: t.parameters for n, t in tools.items()})
    out = {}
    for name, tool in tools.items():
        update: dict[str, Any] = {"parameters": schemas[name]}
        if name in described_in:
            owner = f"{service}_{described_in[name]}"
            update["description"] = f"{tool.description} Shared arguments: see `{owner}`."
        out[name] = tool.model_copy(update=update)
    return out


class ToolMetrics(McpMiddleware):
    """Count and time every tool call (outcome `error` for a tool error or an exception)."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        """Time the call; count its outcome."""
        tool = str(getattr(context.message, "name", "unknown"))
        t0 = time.perf_counter()
        outcome = "error"
        try:
            result = await call_next(context)
            outcome = "error" if getattr(result, "is_error", False) else "ok"
            return result
        except ToolError:
            raise
        finally:
            TOOL_CALLS.labels(tool, outcome).inc()
            TOOL_SECONDS.labels(tool).observe(time.perf_counter() - t0)


class StaticBearerVerifier(TokenVerifier):
    """Accept exactly one bearer token (compared in constant time)."""

    def __init__(self, token: SecretStr) -> None:
        super().__init__()
        self._expected = token.get_secret_value().encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return an access token for the configured secret, None for anything else."""
        if hmac.compare_digest(token.encode(), self._expected):
            return AccessToken(token=token, client_id="gateway-client", scopes=[])
        return None


def build_gateway(
    settings: GatewaySettings | None = None,
    *,
    app_factories: Mapping[str, AppFactory] | None = None,
) -> FastMCP:
    """Return the gateway: every service of settings.spec_dir mounted under its name.

    app_factories overrides `services.<name>.app:create_app` per service (embedded mode).
    """
    settings = settings or GatewaySettings()
    limits = Limits(
        default_limit=settings.default_limit,
        max_limit=max(settings.max_limit, settings.default_limit),
        max_bytes=settings.max_answer_bytes,
        call_budget_s=settings.call_budget_s,
        page_bytes=min(settings.page_bytes, settings.max_answer_bytes),
    )
    services = open_services(settings, app_factories)

    @asynccontextmanager
    async def lifespan(_: FastMCP) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            for service in services:
                await service.start(stack)
            up = [s.name for s in services if s.down_reason is None]
            log.info("gateway (%s mode) serving %s", settings.mode, ", ".join(up) or "nothing")
            yield {"services": {s.name: s for s in services}}

    token = settings.http_token()
    shown = [s for s in services if settings.serves(s.name)]
    gateway: FastMCP = FastMCP(
        name=PLATFORM_NAME,
        version=platform_version(),
        instructions=instructions(shown),
        lifespan=lifespan,
        auth=StaticBearerVerifier(token) if token is not None else None,
    )
    docs: dict[str, dict[str, Any]] = {}
    for service in shown:  # each service under its namespace: market_get_price, ...
        provider = build_service_provider(service, limits, docs)
        gateway.add_provider(provider, namespace=service.name)
    install_guide(gateway, docs, {s.name for s in shown})
    gateway.services = {s.name: s for s in services}  # type: ignore[attr-defined]
    gateway.add_middleware(ToolMetrics())
    install_ops_routes(gateway, services, timeout_s=settings.health_timeout_s)
    return gateway


def install_ops_routes(gateway: FastMCP, services: list[Service], *, timeout_s: float) -> None:
    """Add `GET /health` and `GET /metrics` to the gateway's HTTP app (no token needed).

    `/health` asks every service's `/health` (at most timeout_s each, concurrently): 200 with
    `ok` or `degraded`, 503 `unavailable` when no service answers. Neither route is a tool.
    """

    @gateway.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(_: Request) -> Response:
        state = await gateway_health(services, timeout_s)
        return JSONResponse(state, status_code=503 if state["status"] == "unavailable" else 200)

    @gateway.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics(_: Request) -> Response:
        return Response(render(), media_type=CONTENT_TYPE)


class SlashAlias:
    """Serve `<path>/` exactly as `<path>` (no redirect: MCP clients do not follow them)."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = "/" + path.strip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the aliased path, then pass the request on."""
        if scope["type"] == "http" and scope["path"] == self.path + "/":
            scope = {**scope, "path": self.path, "raw_path": self.path.encode()}
        await self.app(scope, receive, send)


def http_app(gateway: FastMCP, settings: GatewaySettings) -> Any:
    """Return the streamable-HTTP ASGI app of the gateway (token required when configured).

    Foreign `Host` and `Origin` headers are refused (403, `gateway_mcp.origins`); past
    AUTH_FAILURES_PER_MINUTE wrong tokens an address is answered 429 for the rest of its minute.
    """
    return gateway.http_app(
        path=settings.path,
        transport="http",
        middleware=[
            Middleware(OriginGuard, hosts=settings.allowed_hosts, origins=settings.allowed_origins),
            Middleware(SlashAlias, path=settings.path),
            Middleware(RequestMetrics, service="gateway"),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes, service="gateway"),
            Middleware(
                AuthFailureLimit,
                per_minute=settings.auth_failures_per_minute if settings.http_token() else 0,
                service="gateway",
                open_paths=frozenset({"/health", "/metrics"}),
            ),
        ],
    )


async def run_stdio(gateway: FastMCP) -> None:
    """Serve MCP over stdin/stdout (nothing but protocol goes to stdout)."""
    await gateway.run_stdio_async(show_banner=False)


async def run_http(gateway: FastMCP, settings: GatewaySettings) -> None:
    """Serve MCP over streamable HTTP at http://host:port/mcp."""
    import uvicorn

    config = uvicorn.Config(
        http_app(gateway, settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **uvicorn_options(settings),
    )
    setattr(config, CONFIG_ATTRIBUTE, HttpLimits.from_settings(settings))
    await uvicorn.Server(config).serve()
