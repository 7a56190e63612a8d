"""Predictor service: `uvicorn --factory services.predictor.app:create_app`.

This process never imports TensorFlow: the embedded gateway starts every service in one
process, and the LSTM predicts through a numba forward pass whose kernels are compiled (once
per install) or loaded in the background as the service starts. TensorFlow is loaded by
training and online updates, in a job worker process.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.predictor.adapt import watch_outcomes
from services.predictor.market import MarketFeatures
from services.predictor.ml.lstm_inference import warm_kernels
from services.predictor.prediction_log import PredictionLog
from services.predictor.registry import Registry
from services.predictor.routes import PREDICTOR, errors, router
from services.predictor.schemas import Health
from services.predictor.service import PredictorService
from services.predictor.settings import PredictorSettings
from services.predictor.tables import SCHEMA
from shared.app import in_background, service_app
from shared.cache import Cache
from shared.db import Database
from shared.health import install_health
from shared.jobs import JOBS, JobRunner, job_router
from shared.peers import peer_client
from shared.warmup import KERNELS, start_warming

SERVICE = "predictor"

DESCRIPTION = """Direction calls of an LSTM-with-attention + XGBoost ensemble, honestly evaluated.

Models train as jobs on the market service's 50 features per bar (past data only), with a
purged time split, and are judged out of sample beside naive baselines (majority class,
yesterday's direction): a model that does not beat them says so in every answer. Each
training makes a new semantic version of a named model; the last 5 are kept and any can be
rolled back to with bit-identical predictions. Realised out-of-sample outcomes of logged
predictions reweight the members (a softmax over their Sharpe ratios) and, once 100 are new,
start an online update by itself that is kept only if not more than 5% worse. Errors are
RFC 9457 problem details.
"""


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    """Build the predictor service app (settings from the environment by default)."""
    settings = settings or PredictorSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        cache = Cache.from_settings(settings)
        market = MarketFeatures(peer_client(settings, "market"))
        KERNELS.put(app, start_warming("predictor", warm_kernels))  # the LSTM's forward pass
        await db.start(SCHEMA)
        log = PredictionLog(db)
        log.start()
        registry = Registry(
            db,
            cache,
            keep=settings.keep_versions,
            refresh_s=settings.active_refresh_s,
            loaded=settings.loaded_models,
        )
        runner = JobRunner(db, service=SERVICE, settings=settings)
        await runner.start()
        JOBS.put(app, runner)
        service = PREDICTOR.put(
            app,
            PredictorService(
                db=db, cache=cache, registry=registry, market=market, log=log, settings=settings
            ),
        )
        registry.preload("default")  # the first /predict finds the model in memory
        check_s = settings.outcomes_check_s
        watcher = watch_outcomes(service, runner, check_s) if check_s > 0 else None
        try:
            async with in_background(watcher, name="predictor-outcome-watcher"):
                yield
        finally:
            await registry.aclose()
            await runner.aclose()
            await log.aclose()
            await market.aclose()
            await cache.aclose()
            await db.dispose()

    app = service_app(
        title="Predictor service", description=DESCRIPTION, settings=settings, lifespan=lifespan
    )
    install_health(
        app,
        stores=lambda request: (PREDICTOR.of(request).db, PREDICTOR.of(request).cache),
        timeout_s=settings.health_timeout_s,
        model=Health,
        extra=lambda request: {
            "loaded_models": PREDICTOR.of(request).registry.loaded(),
            "tensorflow_loaded": "tensorflow" in sys.modules,
        },
    )
    app.include_router(router)
    app.include_router(job_router(responses=errors(401, 503)))
    return app
