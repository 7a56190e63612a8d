"""Portfolio service: `uvicorn --factory services.portfolio.app:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.portfolio.execution import warm_kernels
from services.portfolio.peers import Peers
from services.portfolio.routes import PORTFOLIO, errors, router
from services.portfolio.scheduler import run_forever
from services.portfolio.service import PortfolioService
from services.portfolio.settings import PortfolioSettings
from services.portfolio.tables import SCHEMA
from shared.app import in_background, service_app
from shared.db import Database
from shared.errors import AppError
from shared.health import install_health
from shared.jobs import JOBS, JobRunner, job_router
from shared.peers import peer_client
from shared.warmup import KERNELS, start_warming

log = logging.getLogger(__name__)

DESCRIPTION = """Paper trading of the backtest's strategies, with a risk manager between every
decision and every order.

Accounts on the embedded `paper` broker (market orders filled whole at the next session's
open from the market service, with the backtest's commission and slippage, rejected when
cash is short). Deployments trade a strategy exactly as `POST /backtest` takes it, on the
backtest service's signals: a replay gives the backtest's fills. Accounts on the `alpaca`
broker trade Alpaca's paper account with the server's stored keys, the latest closed session
only. Orders are paper orders unless the server is configured for live trading; each carries
a deterministic client_order_id, so none is ever sent twice. A long run is a job (202).
Errors are RFC 9457 problem details.
"""


def create_app(settings: PortfolioSettings | None = None) -> FastAPI:
    """Build the portfolio service app (settings from the environment by default)."""
    settings = settings or PortfolioSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        peers = Peers(
            backtest=peer_client(settings, "backtest"), market=peer_client(settings, "market")
        )
        KERNELS.put(app, start_warming("portfolio", warm_kernels))  # the sizing kernels
        await db.start(SCHEMA)
        runner = JobRunner(db, service="portfolio", settings=settings)
        await runner.start()
        JOBS.put(app, runner)
        service = PORTFOLIO.put(app, PortfolioService(db=db, peers=peers, settings=settings))
        try:
            sent = await service.reconcile()
            if sent:
                log.warning("reconciled %d order(s) decided but never sent", sent)
        except AppError as e:  # a peer or the database is down: the next run sends them
            log.error("order reconciliation postponed: %s", e)
        interval_s = settings.portfolio_scheduler_interval_s
        ticking = run_forever(service, interval_s) if interval_s > 0 else None
        try:
            async with in_background(ticking, name="portfolio-scheduler"):
                yield
        finally:
            await runner.aclose()
            await service.aclose()
            await db.dispose()

    app = service_app(
        title="Portfolio service", description=DESCRIPTION, settings=settings, lifespan=lifespan
    )
    install_health(
        app,
        stores=lambda request: (PORTFOLIO.of(request).db, None),
        timeout_s=settings.health_timeout_s,
    )
    app.include_router(router)
    app.include_router(job_router(responses=errors(401, 503)))
    return app
