"""One FastMCP server from every spec in `openapi/`: each service mounted under its name.

`build_gateway(settings)` reads `openapi/<name>.json` for every service, connects to the
service (embedded: its app in-process; remote: its URL), builds the service's tools with
`FastMCP.from_openapi` (names from `operation_id`s, descriptions and argument schemas from
the spec; ops routes such as health and metrics excluded by route maps) and mounts them
with `namespace=<name>`: `market_get_price`, `backtest_run_backtest`, ...
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.providers.openapi import MCPType, RouteMap
from fastmcp.utilities.openapi import HTTPRoute
from pydantic import SecretStr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_mcp.results import Limits
from gateway_mcp.services import AppFactory, Service, open_services
from gateway_mcp.settings import GatewaySettings
from gateway_mcp.tools import GatewayTool, GatewayTools

log = logging.getLogger(__name__)

# Operational routes are for orchestrators, not models: never tools, whatever the service.
OPS_PATHS = r"^/(health|healthz|livez|readyz|ready|live|metrics|ping|version)(/.*)?$"
ROUTE_MAPS = [
    RouteMap(tags={"ops"}, mcp_type=MCPType.EXCLUDE),
    RouteMap(tags={"internal"}, mcp_type=MCPType.EXCLUDE),
    RouteMap(pattern=OPS_PATHS, mcp_type=MCPType.EXCLUDE),
    RouteMap(mcp_type=MCPType.TOOL),  # every other operation, GET included, is a tool
]

INSTRUCTIONS = """Tools of an AI trading research platform, one group per service:
`market_*` market data (prices, OHLCV bars, technical indicators, NYSE calendar), and, when
installed, `predictor_*` (ML predictions) and `backtest_*` (strategy backtests). Errors name
the service, the HTTP status and a stable code. Long lists are paged with `limit`/`offset`.
"""


def build_service_server(service: Service, limits: Limits) -> FastMCP:
    """Return the FastMCP server of one service: its spec's tools, wrapped by the gateway."""
    made: list[tuple[HTTPRoute, Any]] = []
    server: FastMCP = FastMCP.from_openapi(
        openapi_spec=service.spec,
        client=service.client,
        name=service.name,
        route_maps=ROUTE_MAPS,
        mcp_component_fn=lambda route, component: made.append((route, component)),
    )
    tools = {
        component.name: GatewayTool.wrap(component, route, service.name, limits)
        for route, component in made
        if hasattr(component, "parameters")
    }
    server.add_transform(GatewayTools(tools))
    return server


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
    gateway: FastMCP = FastMCP(
        name="trading-platform",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        auth=StaticBearerVerifier(token) if token is not None else None,
    )
    for service in services:
        gateway.mount(build_service_server(service, limits), namespace=service.name)
    gateway.services = {s.name: s for s in services}  # type: ignore[attr-defined]
    return gateway


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
    """Return the streamable-HTTP ASGI app of the gateway (token required when configured)."""
    return gateway.http_app(
        path=settings.path,
        transport="http",
        middleware=[Middleware(SlashAlias, path=settings.path)],
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
    )
    await uvicorn.Server(config).serve()
