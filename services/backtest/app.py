"""Backtest service: `uvicorn --factory services.backtest.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.backtest.market import MarketBars
from services.backtest.routes import BACKTEST, errors, router
from services.backtest.service import BacktestService
from services.backtest.settings import BacktestSettings
from services.backtest.strategy_routes import router as strategy_router
from services.backtest.tables import SCHEMA
from services.backtest.targets import router as signals_router
from services.backtest.warm import warm_kernels
from shared.app import service_app
from shared.cache import Cache
from shared.db import Database
from shared.health import install_health
from shared.jobs import JOBS, JobRunner, job_router
from shared.peers import peer_client
from shared.warmup import KERNELS, start_warming

DESCRIPTION = """Backtests with realistic costs on the market service's bars, and the statistics
to tell an edge from luck.

A numba event loop (next-open or close fills, adverse slippage, per-share and percentage
commission, stops checked against highs and lows, a shared-cash portfolio across symbols),
metrics as fractions beside buy-and-hold, walk-forward analysis, parameter search with the
Deflated Sharpe Ratio and the Probability of Backtest Overfitting, and Monte Carlo
resampling. Every run is stored with its config and a hash of its bars. Long work runs as a
job (202 + `Location`). Errors are RFC 9457 problem details.
"""


def create_app(settings: BacktestSettings | None = None) -> FastAPI:
    """Build the backtest service app (settings from the environment by default)."""
    settings = settings or BacktestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        cache = Cache.from_settings(settings)
        market = MarketBars(
            peer_client(settings, "market"),
            ttl_s=settings.backtest_bars_ttl_s,
            cache_size=settings.backtest_bars_cache_size,
        )
        KERNELS.put(app, start_warming("backtest", warm_kernels))  # while the rest starts
        await db.start(SCHEMA)
        runner = JobRunner(db, service="backtest", settings=settings)
        await runner.start()
        JOBS.put(app, runner)
        service = BACKTEST.put(
            app, BacktestService(db=db, cache=cache, market=market, settings=settings)
        )
        try:
            yield
        finally:
            await runner.aclose()
            await service.aclose()
            await market.aclose()
            await cache.aclose()
            await db.dispose()

    app = service_app(
        title="Backtest service", description=DESCRIPTION, settings=settings, lifespan=lifespan
    )
    install_health(
        app,
        stores=lambda request: (BACKTEST.of(request).db, BACKTEST.of(request).cache),
        timeout_s=settings.health_timeout_s,
    )
    app.include_router(strategy_router)
    app.include_router(router)
    app.include_router(signals_router)
    app.include_router(job_router(responses=errors(401, 503)))
    return app
