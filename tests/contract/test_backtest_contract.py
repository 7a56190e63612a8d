"""Contract: the committed backtest spec is the app's, and schemathesis finds no failure.

The backtest service reads bars from the market service over HTTP: here a real market app
served by uvicorn on a free port (CSV provider), reached through MARKET_URL, as a
deployment apart would reach it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI

from services.backtest.app import create_app
from services.backtest.settings import BacktestSettings
from services.backtest.warm import warm_kernels
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from tests.conftest import market_settings
from tests.contract.conftest import committed_operations, fuzz_operation
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR, render

OPERATIONS = {
    "run_backtest",
    "walk_forward",
    "optimize_parameters",
    "run_monte_carlo",
    "get_results",
    "list_results",
    "get_trades",
    "get_chart",
    "list_strategies",
    "get_job",
    "cancel_job",
}


@pytest.fixture(scope="module")
def market_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve a market app over HTTP in a thread; yield its URL."""
    data_dir: Path = tmp_path_factory.mktemp("contract-backtest-market")
    market = create_market(market_settings(data_dir, SHARED_CSV_DIR))
    with serve_in_thread(market, free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def backtest_app(tmp_path_factory: pytest.TempPathFactory, market_url: str) -> FastAPI:
    """Return the backtest app on a fresh SQLite file, its bars from market_url.

    The engine's kernels are compiled (or loaded from numba's cache) first, with no time
    limit: schemathesis' 10 s request timeout then measures requests, not a fresh clone's
    compile (minutes on two busy cores).
    """
    warm_kernels()
    data_dir: Path = tmp_path_factory.mktemp("contract-backtest")
    return create_app(
        BacktestSettings(
            data_dir=data_dir, database_url=None, redis_url=None, market_url=market_url
        )
    )


@pytest.fixture(scope="module")
def backtest_schema(backtest_app: FastAPI) -> schemathesis.BaseSchema:
    """Return the schema schemathesis generates cases from, served by the app in-process."""
    return schemathesis.openapi.from_asgi("/openapi.json", backtest_app)


def test_committed_spec_matches_the_app(backtest_app: FastAPI) -> None:
    committed = (OPENAPI_DIR / "backtest.json").read_text(encoding="utf-8")
    assert committed == render(backtest_app.openapi()), "run `make openapi` and commit the spec"


def test_the_issues_operation_ids_are_all_there() -> None:
    spec = json.loads((OPENAPI_DIR / "backtest.json").read_text())
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ops >= OPERATIONS
    assert spec["paths"]["/backtest"]["post"]["operationId"] == "run_backtest"
    assert spec["paths"]["/trades/{run_id}"]["get"]["operationId"] == "get_trades"
    chart = spec["paths"]["/results/{run_id}/chart.png"]["get"]["responses"]["200"]["content"]
    assert list(chart) == ["image/png"]
    for path in ("/backtest", "/walk_forward", "/optimize", "/monte_carlo"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "202", "404", "422"} <= set(responses), path


@pytest.mark.parametrize(("path", "method"), committed_operations("backtest"))
def test_api_conforms(backtest_schema: schemathesis.BaseSchema, path: str, method: str) -> None:
    fuzz_operation(backtest_schema, path, method)
