"""The skeleton every service app is built on: logging, problem details, timing, auth, health.

A service's `create_app(settings)` calls `service_app(...)`, includes its routers, and owns
its lifespan. Logging is configured here, in the factory, so `uvicorn --factory
services.<name>.app:create_app` logs (masked, at LOG_LEVEL) exactly as `trading serve` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from shared.api import install_bearer_auth, install_error_handlers, install_server_timing
from shared.config import BaseServiceSettings
from shared.health import HEALTH_PATH
from shared.logging import configure_logging

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({HEALTH_PATH, "/openapi.json"})


def service_app(
    *,
    title: str,
    description: str,
    settings: BaseServiceSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    version: str = "1.0.0",
) -> FastAPI:
    """Return a FastAPI app with the platform's logging, error handling, timing and auth."""
    configure_logging(settings.log_level)
    for name in settings.unknown_settings():
        log.warning("ignoring %s: no %s setting has that name", name, title)
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    install_error_handlers(app)
    install_server_timing(app)
    install_bearer_auth(app, settings.api_token, open_paths=set(OPEN_PATHS))
    return app
