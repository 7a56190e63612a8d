"""Market-data service: `uvicorn --factory services.market.app:create_app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.market.calendar import nyse
from services.market.feature_routes import router as feature_router
from services.market.providers import CsvProvider, Provider, ProviderChain
from services.market.routes import MARKET, router
from services.market.schemas import Health
from services.market.service import MarketService
from services.market.settings import MarketSettings
from services.market.tables import SCHEMA
from shared.app import service_app
from shared.cache import Cache
from shared.db import Database
from shared.health import install_health

log = logging.getLogger(__name__)

DESCRIPTION = """Market data and technical indicators for US equities, indices, FX and crypto.

Prices come from a CSV folder or Yahoo Finance, are validated (bad rows rejected, outliers
and gaps reported), stored once in the database and cached (in-process, then Redis).
Indicators follow TA-Lib's definitions exactly. Errors are RFC 9457 problem details.
"""


def build_providers(settings: MarketSettings) -> list[Provider]:
    """Build the providers named by the settings, in order."""
    providers: list[Provider] = []
    for name in settings.provider_order():
        if name == "csv":
            if settings.market_data_dir is None:
                log.warning("csv provider requested but MARKET_DATA_DIR is not set; skipping")
                continue
            providers.append(CsvProvider(settings.market_data_dir))
        elif name == "yfinance":
            from services.market.yahoo import YahooProvider

            providers.append(
                YahooProvider(
                    timeout_s=settings.yfinance_timeout_s,
                    max_attempts=settings.yfinance_max_attempts,
                    backoff_s=settings.yfinance_backoff_s,
                    max_requests=settings.yfinance_requests_per_hour,
                    period_s=3600.0,
                )
            )
    if not providers:
        raise ValueError("no usable market-data provider: set MARKET_DATA_DIR or MARKET_PROVIDERS")
    return providers


def create_app(settings: MarketSettings | None = None) -> FastAPI:
    """Build the market service app (settings from the environment by default)."""
    settings = settings or MarketSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        cache = Cache.from_settings(settings)
        chain = ProviderChain(
            build_providers(settings),
            failure_threshold=settings.market_breaker_failures,
            cooldown_s=settings.market_breaker_cooldown_s,
        )
        await asyncio.to_thread(nyse)  # build the NYSE calendar off the event loop, once
        await db.start(SCHEMA)
        MARKET.put(
            app,
            MarketService(
                db=db,
                cache=cache,
                providers=chain,
                price_ttl_s=settings.price_ttl_s,
                indicator_ttl_s=settings.indicator_ttl_s,
                historical_ttl_s=settings.historical_ttl_s,
                bulk_concurrency=settings.bulk_concurrency,
                stale_s=settings.market_stale_s,
                request_deadline_s=settings.market_request_deadline_s,
            ),
        )
        try:
            yield
        finally:
            await chain.aclose()
            await cache.aclose()
            await db.dispose()

    app = service_app(
        title="Market data service", description=DESCRIPTION, settings=settings, lifespan=lifespan
    )
    install_health(
        app,
        stores=lambda request: (MARKET.of(request).db, MARKET.of(request).cache),
        timeout_s=settings.health_timeout_s,
        model=Health,
        extra=lambda request: {
            "providers": [p.name for p in MARKET.of(request).providers.providers]
        },
    )
    app.include_router(router)
    app.include_router(feature_router)

    return app
