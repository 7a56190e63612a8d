"""Contract: the committed portfolio spec is the app's, and schemathesis finds no failure.

The portfolio service reaches the market and the backtest over HTTP: here real apps served
by uvicorn on free ports (CSV bars), through MARKET_URL and BACKTEST_URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.backtest.warm import warm_kernels
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.portfolio.app import create_app
from services.portfolio.settings import PortfolioSettings
from tests.conftest import market_settings
from tests.contract.conftest import committed_operations, fuzz_operation
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR, render

OPERATIONS = {
    "create_account",
    "get_account",
    "halt_account",
    "resume_account",
    "list_orders",
    "list_fills",
    "get_risk",
    "create_deployment",
    "get_deployment",
    "stop_deployment",
    "run_deployment",
}


@pytest.fixture(scope="module")
def peer_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Serve a market and a backtest app over HTTP in threads; yield their URLs.

    The backtest's kernels are compiled first, with no time limit (see the backtest's
    contract test): the fuzzer's request timeout then never meets a cold compile.
    """
    warm_kernels()
    data_dir: Path = tmp_path_factory.mktemp("contract-portfolio-peers")
    market = create_market(market_settings(data_dir / "market", SHARED_CSV_DIR))
    with serve_in_thread(market, free_port()) as market_url:
        backtest = create_backtest(
            BacktestSettings(
                data_dir=data_dir / "backtest",
                database_url=None,
                redis_url=None,
                market_url=market_url,
            )
        )
        with serve_in_thread(backtest, free_port()) as backtest_url:
            yield market_url, backtest_url


@pytest.fixture(scope="module")
def portfolio_app(tmp_path_factory: pytest.TempPathFactory, peer_urls: tuple[str, str]) -> FastAPI:
    """Return the portfolio app on a fresh SQLite file, its peers over HTTP."""
    market_url, backtest_url = peer_urls
    return create_app(
        PortfolioSettings(
            data_dir=tmp_path_factory.mktemp("contract-portfolio"),
            database_url=None,
            redis_url=None,
            market_url=market_url,
            backtest_url=backtest_url,
        )
    )


@pytest.fixture(scope="module")
def portfolio_schema(portfolio_app: FastAPI) -> schemathesis.BaseSchema:
    """Return the schema schemathesis generates cases from, served by the app in-process."""
    return schemathesis.openapi.from_asgi("/openapi.json", portfolio_app)


def test_committed_spec_matches_the_app(portfolio_app: FastAPI) -> None:
    committed = (OPENAPI_DIR / "portfolio.json").read_text(encoding="utf-8")
    assert committed == render(portfolio_app.openapi()), "run `make openapi` and commit the spec"


def test_the_issues_operation_ids_are_all_there() -> None:
    spec = json.loads((OPENAPI_DIR / "portfolio.json").read_text())
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ops >= OPERATIONS
    request = spec["components"]["schemas"]["DeploymentCreate"]
    assert request["additionalProperties"] is False


@pytest.mark.parametrize(("path", "method"), committed_operations("portfolio"))
def test_api_conforms(portfolio_schema: schemathesis.BaseSchema, path: str, method: str) -> None:
    fuzz_operation(portfolio_schema, path, method, max_examples=40)


def test_tools_that_trade_halt_or_stop_are_marked_destructive_and_reads_read_only() -> None:
    gateway = build_gateway(GatewaySettings(mode="remote", spec_dir=OPENAPI_DIR, toolsets="all"))
    tools = {t.name: t for t in asyncio.run(gateway.list_tools()) if t.name.startswith("portfolio")}
    for name in ("run_deployment", "halt_account", "resume_account", "stop_deployment"):
        hints = tools[f"portfolio_{name}"].annotations
        assert hints is not None and hints.destructive_hint and hints.read_only_hint is False
    for name in ("get_account", "list_orders", "list_fills", "get_risk", "get_deployment"):
        hints = tools[f"portfolio_{name}"].annotations
        assert hints is not None and hints.read_only_hint is True
