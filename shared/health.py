"""`/health` for every service: it asks the database (`SELECT 1`, bounded) and Redis each time.

A memoised answer would say `ok` forever after the first success; this one goes 503 within
the timeout when the database stops answering, and back to 200 when it returns. A Redis
outage only degrades a service (it serves from L1 and the database), so it stays 200.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

from shared.cache import Cache
from shared.db import Database
from shared.errors import DatabaseUnavailableError

HEALTH_PATH = "/health"


class Health(BaseModel):
    """Liveness and the state of backing stores."""

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`ok`; `degraded` when Redis is down (answers still come, from L1 and the "
        "database); `unavailable` (HTTP 503) when the database does not answer."
    )
    database: Literal["ok", "unavailable"] = Field(description="`SELECT 1` within the timeout.")
    redis: Literal["ok", "unavailable", "disabled"] = Field(
        description="PING answered; `disabled` when no REDIS_URL is set."
    )


async def probe(db: Database, cache: Cache | None, timeout_s: float) -> dict[str, str]:
    """Ask the database and Redis now; return the fields of a Health answer."""
    try:
        await db.ping(timeout_s)
        database = "ok"
    except DatabaseUnavailableError:
        database = "unavailable"
    pong = await cache.ping() if cache is not None else None
    redis = "disabled" if pong is None else ("ok" if pong else "unavailable")
    if database != "ok":
        status = "unavailable"
    elif redis == "unavailable":
        status = "degraded"
    else:
        status = "ok"
    return {"status": status, "database": database, "redis": redis}


def install_health(
    app: FastAPI,
    *,
    stores: Callable[[Request], tuple[Database, Cache | None]],
    timeout_s: float,
    model: type[Health] = Health,
    extra: Callable[[Request], dict[str, Any]] | None = None,
) -> None:
    """Add `GET /health` (operation `health`, tag `ops`): 200 when the database answers, else 503.

    stores returns the app's database and cache (built in its lifespan); extra adds
    service-specific fields declared by model. The stores getter is kept as
    `app.state.stores`: `/metrics` reads database pool use and job counts through it.
    """
    app.state.stores = stores

    @app.get(
        HEALTH_PATH,
        operation_id="health",
        response_model=model,
        tags=["ops"],
        responses={503: {"model": model, "description": "The database does not answer."}},
    )
    async def health(request: Request, response: Response) -> Any:
        """Report liveness and whether the database and Redis answer right now."""
        db, cache = stores(request)
        fields: dict[str, Any] = await probe(db, cache, timeout_s)
        if extra is not None:
            fields.update(extra(request))
        if fields["status"] == "unavailable":
            response.status_code = 503
        return model.model_validate(fields)
