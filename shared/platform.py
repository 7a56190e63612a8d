"""Host every service in one ASGI app (for `trading serve`): /market, later /predictor..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from shared.http import app_lifespan


def service_apps() -> dict[str, FastAPI]:
    """Return each service's app by namespace, built from environment settings."""
    from services.market.app import create_app as market

    return {"market": market()}


def build_platform_app() -> FastAPI:
    """Mount every service under /<namespace> and run their lifespans."""
    apps = service_apps()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for sub in apps.values():
                await stack.enter_async_context(app_lifespan(sub))
            yield

    root = FastAPI(title="Trading platform", lifespan=lifespan, docs_url=None, redoc_url=None)
    for name, sub in apps.items():
        root.mount(f"/{name}", sub)
    return root
