"""Through MCP: strict arguments on every tool, rounded numbers, answers that name tools."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client

from gateway_mcp.links import ToolTable, speak_tools
from gateway_mcp.numbers import round_numbers, round_significant
from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.backtest.app import create_app as backtest_app
from services.market.app import create_app as market_app

REPO = Path(__file__).resolve().parents[3]
RUN = {
    "symbol": "AAPL",
    "start_date": "2022-01-03",
    "end_date": "2023-10-27",
    "strategy": {"name": "sma_crossover"},
}


def typo(name: str) -> str:
    """Return name with one letter dropped from its middle (`period` -> `peiod`)."""
    i = len(name) // 2
    return name[:i] + name[i + 1 :]


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def significant_digits(x: float) -> int:
    digits = f"{abs(x):.15g}".replace(".", "").lstrip("0").rstrip("0")
    return len(digits.split("e")[0])


def test_every_tool_refuses_an_unknown_argument_by_name(data_env: Path) -> None:
    async def go() -> list[tuple[str, str, str, str]]:
        out = []
        async with Client(build_gateway(GatewaySettings())) as client:
            for tool in await client.list_tools():
                props = sorted(tool.input_schema.get("properties", {}))
                bogus = await client.call_tool(
                    tool.name, {"zzz_no_such_argument": 1}, raise_on_error=False
                )
                out.append((tool.name, "zzz_no_such_argument", "", text(bogus)))
                for prop in (p for p in props if len(p) >= 5):
                    wrong = await client.call_tool(tool.name, {typo(prop): 1}, raise_on_error=False)
                    out.append((tool.name, typo(prop), prop, text(wrong)))
        return out

    answers = anyio.run(go)
    assert len({tool for tool, *_ in answers}) >= 31
    for tool, sent, meant, message in answers:
        assert f"unknown argument `{sent}`" in message, (tool, message)
        assert "Error building request" not in message
        if meant:
            assert message.endswith(f"did you mean `{meant}`?"), (tool, sent, message)


def test_answers_are_rounded_and_compact_through_mcp_but_not_over_rest(data_env: Path) -> None:
    async def go() -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any]]:
        async with Client(build_gateway(GatewaySettings())) as client:
            run = await client.call_tool("backtest_run_backtest", RUN)
            sketch = await client.call_tool("backtest_run_backtest", {**RUN, "equity_points": 20})
            size = len(text(run).encode())
            data = run.structured_content
            stored = await client.call_tool(
                "backtest_get_results", {"run_id": data["run_id"], "equity_points": 500}
            )
        assert data is not None and sketch.structured_content is not None
        kept = stored.structured_content or {}
        return data, sketch.structured_content, size, kept.get("result", kept)

    mcp, sketch, size, stored = anyio.run(go)
    assert size <= 4_000  # a typical backtest answer
    assert mcp["equity"]["points"] == 0 and mcp["equity"]["total_points"] == mcp["bars"]
    assert sketch["equity"]["points"] == 20
    assert stored["equity"]["points"] == stored["bars"]  # the full curve through get_results

    floats: list[tuple[str, float]] = []

    def collect(node: Any, name: str = "") -> None:
        if isinstance(node, float):
            floats.append((name, node))
        elif isinstance(node, dict):
            for k, v in node.items():
                collect(v, k)
        elif isinstance(node, list):
            for v in node:
                collect(v, name)

    collect(mcp)
    assert floats
    assert all(significant_digits(x) <= 6 for name, x in floats if "capital" not in name)
    capital = mcp["metrics"]["final_capital"]
    assert round(capital, 2) == capital

    # REST keeps every digit.
    async def rest() -> dict[str, Any]:
        from shared.http import app_lifespan, register_local_app, unregister_local_app

        market = market_app()
        register_local_app("market", market)  # the backtest reads bars from it in-process
        app = backtest_app()
        try:
            async with app_lifespan(market), app_lifespan(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                    response = await http.post("/backtest", json=RUN)
                    return response.json()  # type: ignore[no-any-return]
        finally:
            unregister_local_app("market")

    full = anyio.run(rest)
    ratio = full["metrics"]["sharpe_ratio"]
    assert significant_digits(ratio) > 6
    assert mcp["metrics"]["sharpe_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert full["equity"]["points"] == 250  # REST's default is unchanged


def test_rounding_rules() -> None:
    assert round_significant(0.123456789) == 0.123457
    assert round_significant(123456789.0) == 123457000.0
    assert round_significant(-1.23456789e-7) == -1.23457e-7
    assert math.isnan(round_significant(float("nan")))
    data = {"final_capital": 1234567.891, "sharpe_ratio": 1.23456789, "n": 3, "ok": True}
    assert round_numbers(data) == {
        "final_capital": 1234567.89,
        "sharpe_ratio": 1.23457,
        "n": 3,
        "ok": True,
    }
    assert round_numbers({"equity": [100000.123, 99999.999]}) == {"equity": [100000.12, 100000.0]}


def test_links_and_hints_name_tools_not_http_operations() -> None:
    spec = json.loads((REPO / "openapi" / "backtest.json").read_text())
    predictor = json.loads((REPO / "openapi" / "predictor.json").read_text())
    table = ToolTable("backtest", spec)
    answer = {
        "links": {
            "result": "/backtest/results/42",
            "chart": "/results/42/chart.png",
            "trades": "/trades/42",
        },
        "notes": ["Fills: GET /trades/{run_id}. Use POST /walk_forward to test it."],
        "job": {"id": "j1", "kind": "walk_forward", "status": "running", "progress": {}},
    }
    out = speak_tools(answer, table, wait_s=30)
    assert out["links"] == {
        "result": "backtest_get_results(run_id=42)",
        "chart": "backtest_get_chart(run_id=42)",
        "trades": "backtest_get_trades(run_id=42)",
    }
    assert out["notes"] == ["Fills: `backtest_get_trades`. Use `backtest_walk_forward` to test it."]
    assert out["job"]["continue_with"] == 'backtest_get_job(job_id="j1", wait_s=30)'
    assert out["job"]["cancel_with"] == 'backtest_cancel_job(job_id="j1")'
    hints = ToolTable("predictor", predictor)
    assert hints.rewrite_text("train one with POST /train; GET /model_info lists them") == (
        "train one with `predictor_train_models`; `predictor_get_model_info` lists them"
    )


def test_data_coverage_is_a_tool_and_a_resource(data_env: Path) -> None:
    async def go() -> tuple[Any, Any]:
        async with Client(build_gateway(GatewaySettings())) as client:
            tool = await client.call_tool("market_list_symbols", {})
            resource = await client.read_resource("market://symbols")
            return tool.structured_content, json.loads(resource[0].text)

    tool, resource = anyio.run(go)
    aapl = next(s for s in tool["symbols"] if s["symbol"] == "AAPL" and s["source"] == "csv")
    assert aapl["first_bar"] == "2003-10-30" and aapl["last_bar"] == "2023-10-27"
    assert [s["symbol"] for s in resource["symbols"]] == [s["symbol"] for s in tool["symbols"]]
