"""A small service built on `shared.app.service_app`, for the limit, rate and metrics tests.

`GET /wait/{name}` holds its request until the test opens the gate of that name, so a test
can fill the service's request slots on purpose. `uvicorn --factory
tests.unit.shared.limits_app:create_app` serves it with settings from the environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from shared.api import ProblemDocs
from shared.app import service_app
from shared.cache import Cache
from shared.config import BaseServiceSettings
from shared.db import Database
from shared.health import install_health

errors = ProblemDocs({})


class Thing(BaseModel):
    """A body to post."""

    name: str = Field(max_length=10_000_000)


def limits_settings(tmp_path: Path, **overrides: Any) -> BaseServiceSettings:
    """Return settings with a SQLite file under tmp_path, no Redis, no token."""
    values: dict[str, Any] = {"data_dir": tmp_path, "redis_url": None, "database_url": None}
    values.update(overrides)
    return BaseServiceSettings(**values)


def create_app(settings: BaseServiceSettings | None = None) -> FastAPI:
    """Build the test service (settings from the environment by default)."""
    settings = settings or BaseServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        cache = Cache(redis_url=None)
        await db.start()
        app.state.db, app.state.cache = db, cache
        app.state.gates = {}
        try:
            yield
        finally:
            await db.dispose()

    app = service_app(
        title="Limits test service",
        description="Echo, post and wait.",
        settings=settings,
        lifespan=lifespan,
        name="limits",
    )
    install_health(
        app,
        stores=lambda request: (request.app.state.db, request.app.state.cache),
        timeout_s=settings.health_timeout_s,
    )

    @app.get("/echo/{n}", operation_id="echo", responses=errors(401, 422))
    async def echo(n: int) -> dict[str, int]:
        """Return n."""
        return {"n": n}

    @app.delete("/echo/{n}", operation_id="forget_echo", responses=errors(401, 422))
    async def forget_echo(n: int) -> dict[str, int]:
        """Forget n (a second method on the echo path)."""
        return {"forgot": n}

    @app.post("/things", operation_id="create_thing", responses=errors(400, 401, 422))
    async def create_thing(thing: Thing) -> dict[str, int]:
        """Return the length of the thing's name."""
        return {"length": len(thing.name)}

    @app.get("/boom", operation_id="boom")
    async def boom() -> dict[str, str]:
        """Fail unexpectedly (a bug on purpose: the 500 path of the error handling)."""
        raise RuntimeError("boom on purpose")

    @app.get("/wait/{name}", operation_id="wait")
    async def wait(name: str, request: Request) -> dict[str, str]:
        """Wait until the gate called name opens."""
        gates: dict[str, asyncio.Event] = request.app.state.gates
        await gates.setdefault(name, asyncio.Event()).wait()
        return {"waited": name}

    return app


def create_platform() -> FastAPI:
    """Build the test service mounted at /limits in a platform app, as `trading serve` mounts."""
    from trading.host import build_platform_app

    return build_platform_app({"limits": create_app()})


def open_gate(app: FastAPI, name: str) -> None:
    """Release every request waiting on the gate called name."""
    app.state.gates.setdefault(name, asyncio.Event()).set()
