"""Backtest service: `uvicorn --factory services.backtest.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.backtest.market import MarketBars
from services.backtest.routes import errors, router
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
from shared.http import service_client
from shared.jobs import JobRunner, job_router
from shared.warmup import start_warming

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
        cache = Cache(
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            l1_size=settings.l1_cache_size,
            l1_max_bytes=settings.l1_cache_max_mb * 2**20,
            timeout_s=settings.redis_timeout_s,
        )
        client = service_client(
            "market",
            settings.market_url,
            token=settings.market_bearer(),
            timeout_s=settings.market_timeout_s,
        )
        market = MarketBars(
            client,
            ttl_s=settings.backtest_bars_ttl_s,
            cache_size=settings.backtest_bars_cache_size,
        )
        app.state.kernels = start_warming("backtest", warm_kernels)  # while the rest starts
        await db.start(SCHEMA)
        runner = JobRunner(db, service="backtest", settings=settings)
        await runner.start()
        app.state.jobs = runner
        app.state.backtest = BacktestService(db=db, cache=cache, market=market, settings=settings)
        try:
            yield
        finally:
            await runner.aclose()
            await app.state.backtest.aclose()
            await market.aclose()
            await cache.aclose()
            await db.dispose()

    app = service_app(
        title="Backtest service", description=DESCRIPTION, settings=settings, lifespan=lifespan
    )
    install_health(
        app,
        stores=lambda request: (request.app.state.backtest.db, request.app.state.backtest.cache),
        timeout_s=settings.health_timeout_s,
    )
    app.include_router(strategy_router)
    app.include_router(router)
    app.include_router(signals_router)
    app.include_router(job_router(responses=errors(401, 503)))
    return app
