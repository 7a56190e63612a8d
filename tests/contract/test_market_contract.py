"""Contract: the committed spec is the app's spec, and schemathesis finds no failure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI

from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from tests.contract.conftest import committed_operations, fuzz_operation
from trading.openapi import OPENAPI_DIR, render


@pytest.fixture(scope="module")
def market_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """Return the market app on a fresh SQLite file, CSV provider only, no Redis."""
    data_dir: Path = tmp_path_factory.mktemp("contract-market")
    yield create_app(
        MarketSettings(
            data_dir=data_dir,
            market_data_dir=SHARED_CSV_DIR,
            market_providers=["csv"],
            redis_url=None,
            database_url=None,
        )
    )


@pytest.fixture(scope="module")
def market_schema(market_app: FastAPI) -> schemathesis.BaseSchema:
    """Return the schema schemathesis generates cases from, served by the app in-process."""
    return schemathesis.openapi.from_asgi("/openapi.json", market_app)


def test_committed_spec_matches_the_app(market_app: FastAPI) -> None:
    committed = (OPENAPI_DIR / "market.json").read_text(encoding="utf-8")
    assert committed == render(market_app.openapi()), "run `make openapi` and commit the spec"


def test_every_route_has_an_operation_id() -> None:
    spec = json.loads((OPENAPI_DIR / "market.json").read_text())
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("operationId") for op in ops)
    assert {op["operationId"] for op in ops} >= {
        "get_price",
        "get_historical",
        "get_indicators",
        "get_market_status",
        "bulk_fetch",
        "get_rsi",
        "get_williams_r",
        "get_bollinger_bands",
        "get_macd",
    }


@pytest.mark.parametrize(("path", "method"), committed_operations("market"))
def test_api_conforms(market_schema: schemathesis.BaseSchema, path: str, method: str) -> None:
    fuzz_operation(market_schema, path, method)
