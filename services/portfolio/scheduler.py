"""Trade every active deployment by itself after each close (PORTFOLIO_SCHEDULER_INTERVAL_S).

Every interval the scheduler asks the market service's exchange calendar (`/market_status`)
whether today's session has closed, and runs each active deployment up to the latest closed
session (a deployment already there processes nothing). Off by default (0): a laptop or a
test runs deployments with `POST /deployments/{id}/run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from services.portfolio import repository as repo
from services.portfolio.service import PortfolioService
from shared.errors import AppError
from shared.http import UpstreamProblemError

log = logging.getLogger(__name__)


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")

    is_trading_day: bool
    session_close: datetime | None = None


async def last_closed_session(service: PortfolioService, now: datetime) -> date:
    """Return today when its session has closed (per the market's calendar), else yesterday."""
    try:
        response = await service.peers.market.request(
            "GET", "/market_status", params={"at": now.isoformat()}
        )
        status = _Status.model_validate_json(response.content)
    except UpstreamProblemError as e:
        raise AppError(f"market status: {e.detail}") from e
    closed = status.is_trading_day and status.session_close is not None
    if closed and status.session_close is not None and now >= status.session_close:
        return now.date()
    return now.date() - timedelta(days=1)


async def tick(service: PortfolioService, now: datetime | None = None) -> dict[str, int]:
    """Run every active deployment up to the latest closed session; return sessions by id."""
    now = now or datetime.now(UTC)
    until = await last_closed_session(service, now)
    async with service.db.session() as s:
        active = await repo.active_deployments(s)
    done: dict[str, int] = {}
    for dep in active:
        start = date.fromisoformat(dep["config"]["start_date"])
        if until <= start:
            continue
        try:
            result = await service.run(dep["id"], until)
        except AppError as e:  # one deployment's failure must not stop the others
            log.error("scheduled run of deployment %s failed: %s", dep["id"], e)
            continue
        done[str(dep["id"])] = result.sessions
    return done


async def run_forever(service: PortfolioService, interval_s: float) -> None:
    """Tick every interval_s seconds until cancelled."""
    while True:
        with contextlib.suppress(AppError):
            await tick(service)
        await asyncio.sleep(interval_s)
