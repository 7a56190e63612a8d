"""Contract: the committed predictor spec is the app's, and schemathesis finds no failure.

The predictor reads features from the market service over HTTP: here a real market app
served by uvicorn on a free port (CSV provider), reached through MARKET_URL. The database
holds one small XGBoost-only version of `default`, trained on AAPL before the app starts,
so `/predict`, `/model_info`, `/weights` and `/performance` answer 200 too.

`POST /train` is fuzzed against a second app whose market is unreachable: every accepted
example starts a job, and with a reachable market each would train a real model (minutes
for the full-size LSTM). There the jobs fail at once at loading their bars, and what is
checked is the route's own answer (202 + Location, or a documented 4xx), which is the
contract under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi import FastAPI

from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.predictor.app import create_app
from services.predictor.evaluation import clean_json
from services.predictor.ml.training import SeriesData, TrainConfig, train_ensemble
from services.predictor.ml.xgboost_model import XGBoostConfig
from services.predictor.registry import Registry
from services.predictor.settings import PredictorSettings
from services.predictor.tables import SCHEMA
from shared.cache import Cache
from shared.db import Database
from shared.quant.features import FEATURE_NAMES, compute_features
from tests.conftest import market_settings
from tests.contract.conftest import committed_operations, fuzz_operation
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR, render

OPERATIONS = {
    "train_models",
    "predict",
    "get_performance",
    "get_model_info",
    "get_weights",
    "rollback_model",
    "update_online",
    "get_job",
    "cancel_job",
}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connections are refused at once


async def seed_model(database_url: str) -> None:
    """Store a small XGBoost-only version 1.0.0 of `default` trained on AAPL's bars."""
    frame = pd.read_csv(SHARED_CSV_DIR / "AAPL.csv").iloc[-1500:-300]
    _, matrix = compute_features(
        frame["open"], frame["high"], frame["low"], frame["close"], frame["volume"], frame["date"]
    )
    series = SeriesData(
        "AAPL", matrix, frame["close"].to_numpy(np.float64), pd.to_datetime(frame["date"])
    )
    config = replace(TrainConfig(models=("xgboost",)), xgboost=XGBoostConfig(n_estimators=20))
    model = train_ensemble(series, config, feature_names=FEATURE_NAMES)
    db = Database(database_url)
    await db.migrate(SCHEMA)
    try:
        registry = Registry(db, Cache())
        await registry.add(
            "default",
            artifacts=model.to_artifacts(),
            hyperparameters={
                "config": config.to_dict(),
                "feature_names": list(FEATURE_NAMES),
                "symbols": ["AAPL"],
            },
            training_metrics=clean_json(
                {
                    "kind": "trained",
                    **model.metrics,
                    "info": model.info,
                    "ensemble": model.ensemble.to_dict(),
                }
            ),
            data_start=pd.Timestamp(frame["date"].iloc[0], tz="UTC").to_pydatetime(),
            data_end=pd.Timestamp(frame["date"].iloc[-1], tz="UTC").to_pydatetime(),
            kind="trained",
        )
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def market_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve a market app over HTTP in a thread; yield its URL."""
    data_dir: Path = tmp_path_factory.mktemp("contract-predictor-market")
    market = create_market(market_settings(data_dir, SHARED_CSV_DIR))
    with serve_in_thread(market, free_port()) as url:
        yield url


def predictor_settings(data_dir: Path, market_url: str) -> PredictorSettings:
    """Return settings on a fresh SQLite file under data_dir, features from market_url."""
    return PredictorSettings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'trading.db'}",
        redis_url=None,
        market_url=market_url,
        dask_scheduler_address=None,
    )


@pytest.fixture(scope="module")
def predictor_app(tmp_path_factory: pytest.TempPathFactory, market_url: str) -> FastAPI:
    """Return the predictor app with one trained version, its features from market_url."""
    settings = predictor_settings(tmp_path_factory.mktemp("contract-predictor"), market_url)
    asyncio.run(seed_model(settings.resolved_database_url()))
    return create_app(settings)


@pytest.fixture(scope="module")
def training_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """Return a predictor app whose market is unreachable (its training jobs fail at once)."""
    return create_app(predictor_settings(tmp_path_factory.mktemp("contract-train"), UNREACHABLE))


@pytest.fixture(scope="module")
def predictor_schema(predictor_app: FastAPI) -> schemathesis.BaseSchema:
    """Return the schema schemathesis generates cases from, served by the app in-process."""
    return schemathesis.openapi.from_asgi("/openapi.json", predictor_app)


def test_committed_spec_matches_the_app(predictor_app: FastAPI) -> None:
    committed = (OPENAPI_DIR / "predictor.json").read_text(encoding="utf-8")
    assert committed == render(predictor_app.openapi()), "run `make openapi` and commit the spec"


def test_the_issues_operation_ids_are_all_there() -> None:
    spec = json.loads((OPENAPI_DIR / "predictor.json").read_text())
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ops >= OPERATIONS
    paths = spec["paths"]
    assert paths["/train"]["post"]["operationId"] == "train_models"
    assert paths["/model_info"]["get"]["operationId"] == "get_model_info"
    assert {"202", "422"} <= set(paths["/train"]["post"]["responses"])
    assert {"200", "202", "404", "422"} <= set(paths["/update_online"]["post"]["responses"])
    prediction = spec["components"]["schemas"]["Prediction"]["properties"]
    assert {"direction", "probabilities", "confidence", "model", "version", "members"} <= set(
        prediction
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [p for p in committed_operations("predictor") if p.values != ("/train", "POST")],
)
def test_api_conforms(predictor_schema: schemathesis.BaseSchema, path: str, method: str) -> None:
    fuzz_operation(predictor_schema, path, method)


def test_the_training_route_conforms(training_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", training_app)
    fuzz_operation(schema, "/train", "POST")
