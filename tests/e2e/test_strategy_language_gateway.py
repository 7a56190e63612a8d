"""E2E: a model-style session with the strategy language through the gateway (streamable
HTTP, the official `mcp` SDK client): validate rules, fix the error from its message,
validate again, save (which checks them the same way), backtest by name, and optimise one of
its `$params`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from shared.http import unregister_local_app
from tests.conftest import market_settings
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR

pytestmark = pytest.mark.e2e

DRAFT = {
    "rules": {
        "entry_long": "rsl(close, $n) < 35 and close > sma(close, 100)",
        "exit_long": "rsi(close, $n) > 65",
    },
    "params": {"n": {"default": 14, "min": 2, "max": 50}},
}
RUN = {
    "symbol": "AAPL",
    "start_date": "2014-01-01",
    "end_date": "2023-10-27",
    "initial_capital": 10000,
    "commission_rate": 0.001,
}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the gateway with the market and backtest services embedded."""
    tmp: Path = tmp_path_factory.mktemp("language-gateway")
    backtest = BacktestSettings(data_dir=tmp, database_url=None, redis_url=None)
    settings = GatewaySettings(spec_dir=OPENAPI_DIR, job_poll_interval_s=0.02, token=None)
    gateway = build_gateway(
        settings,
        app_factories={
            "market": lambda: create_market(market_settings(tmp, SHARED_CSV_DIR)),
            "backtest": lambda: create_backtest(backtest),
        },
    )
    with serve_in_thread(http_app(gateway, settings), free_port()) as url:
        yield url
    for name in ("market", "backtest", "predictor"):  # the gateway may embed every spec's app
        unregister_local_app(name)


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def _session(url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with anyio.fail_after(240):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60, read=240)) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            run_tool = tools["backtest_run_backtest"]
            seen["description"] = run_tool.input_schema["properties"]["strategy"]["description"]
            seen["guide"] = tools["backtest_save_strategy"].description
            first = await session.call_tool("backtest_validate_strategy", DRAFT)
            seen["first"] = first
            # the model fixes the rule from the message: "... did you mean `rsi`?"
            match = re.search(r"unknown function `(\w+)`; did you mean `(\w+)`\?", _text(first))
            assert match is not None, _text(first)
            wrong, right = match.groups()
            rules = {k: v.replace(f"{wrong}(", f"{right}(") for k, v in DRAFT["rules"].items()}
            seen["valid"] = await session.call_tool(
                "backtest_validate_strategy", {**DRAFT, "rules": rules}
            )
            draft = {"name": "rsi_dip", "description": "RSI dips in an uptrend", **DRAFT}
            seen["refused"] = await session.call_tool("backtest_save_strategy", draft)
            fixed = {**draft, "rules": rules}
            seen["saved"] = await session.call_tool("backtest_save_strategy", fixed)
            seen["run"] = await session.call_tool(
                "backtest_run_backtest", {**RUN, "strategy": {"name": "rsi_dip"}}
            )
            seen["search"] = await session.call_tool(
                "backtest_optimize_parameters",
                {
                    **RUN,
                    "strategy": {"name": "rsi_dip"},
                    "param_grid": {"n": {"start": 6, "stop": 30, "step": 2}},
                },
            )
    return seen


def test_a_model_writes_fixes_saves_backtests_and_optimises_a_strategy(
    gateway_url: str,
) -> None:
    seen = anyio.run(_session, gateway_url)

    assert "sma_crossover" in seen["description"] and "or a saved" in seen["description"]
    assert "Grammar: expr :=" in seen["guide"] and seen["guide"].count("Example: ") == 2
    first = seen["first"]
    assert first.is_error
    assert "entry_long 1:1: unknown function `rsl`; did you mean `rsi`?" in _text(first)
    valid = seen["valid"]
    assert not valid.is_error, valid.content
    assert valid.structured_content["warmup_bars"] == 99  # sma(close, 100)
    assert [p["name"] for p in valid.structured_content["params"]] == ["n"]
    refused = seen["refused"]  # saving checks the rules as validating does
    assert refused.is_error and "did you mean `rsi`?" in _text(refused)
    saved = seen["saved"]
    assert not saved.is_error, saved.content
    assert saved.structured_content["version"] == 1  # the failed first try saved nothing
    assert saved.structured_content["rules"]["exit_long"] == "rsi(close, $n) > 65"
    run = seen["run"]
    assert not run.is_error, run.content
    body = run.structured_content
    assert body["strategy"] == "rsi_dip"
    assert body["config"]["strategy"]["version"] == 1
    assert body["config"]["strategy"]["rules"]["entry_long"].startswith("rsi(close, $n) < 35")
    assert body["metrics"]["total_trades"] > 0
    search = seen["search"]
    assert not search.is_error, search.content
    result = search.structured_content
    assert result["n_trials"] == 13 and result["strategy"] == "rsi_dip"
    assert 6 <= result["best_params"]["n"] <= 30
    assert 0 <= result["deflated_sharpe_ratio"] <= 1
