"""Host every service in one ASGI app (for `trading serve`): /market, /backtest, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from shared.api import install_error_handlers
from shared.http import app_lifespan, register_local_app, unregister_local_app
from trading.discovery import service_apps


def build_platform_app(apps: dict[str, Any] | None = None) -> FastAPI:
    """Mount every service under /<name>, run their lifespans, and let them call one another
    in-process (each stays behind its HTTP contract)."""
    apps = service_apps() if apps is None else apps
    for name, sub in apps.items():
        register_local_app(name, sub)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for name, sub in apps.items():
            register_local_app(name, sub)
        try:
            async with AsyncExitStack() as stack:
                for sub in apps.values():
                    await stack.enter_async_context(app_lifespan(sub))
                yield
        finally:  # a stopped platform is nobody's in-process peer any more
            for name, sub in apps.items():
                unregister_local_app(name, sub)

    root = FastAPI(title="Trading platform", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(root)  # a path no service matches is a problem-details 404 too
    for name, sub in apps.items():
        root.mount(f"/{name}", sub)
    return root
