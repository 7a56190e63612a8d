"""Every tool call answers within GATEWAY_CALL_BUDGET_S, a direct (non-job) request included.

A request still running at the end of the budget is cut: the tool answers a 504 problem that
names the tool and says what to do, and the service's work stops (the embedded app's request
is cancelled, as a remote one sees its client go). The budget is made tiny here so that a
real backtest over 1990-2023 runs past it on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastmcp import Client

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings

LONG_RUN = {
    "symbol": "AAPL",
    "start_date": "1990-01-02",
    "end_date": "2023-10-27",
    "strategy": {"name": "sma_crossover"},
}
OTHER_RUN = {**LONG_RUN, "strategy": {"name": "sma_crossover", "params": {"fast": 7}}}


def text(result: Any) -> str:
    """Return the text of a tool's answer."""
    return " ".join(str(getattr(c, "text", "")) for c in result.content)


def test_a_direct_request_past_the_budget_is_cut_with_a_problem_and_its_work_stops(
    data_env: Path,
) -> None:
    gateway = build_gateway(GatewaySettings(toolsets="backtest", call_budget_s=0.001))

    async def go() -> tuple[Any, list[str]]:
        async with Client(gateway) as client:
            cut = await client.call_tool("backtest_run_backtest", LONG_RUN, raise_on_error=False)
            # Without a tool call's deadline the service's own client is not cut: another
            # run to its end, then the stored runs. A cut run that went on would be there.
            rest = gateway.services["backtest"].client  # type: ignore[attr-defined]
            other = await rest.post("/backtest", json=OTHER_RUN)
            assert other.status_code == 200, other.text[:300]
            listed = await rest.get("/results")
            runs = [r["run_id"] for r in listed.json()["results"]]
            return cut, runs

    cut, runs = anyio.run(go)
    message = text(cut)
    assert cut.is_error
    assert "504 service_timeout" in message
    assert "`backtest_run_backtest`" in message and "0.001 s call budget" in message
    assert "GATEWAY_CALL_BUDGET_S" in message and "shorter date range" in message
    assert len(runs) == 1  # the cut run never stored, only the other one


def test_a_request_within_the_budget_is_answered_in_full(data_env: Path) -> None:
    gateway = build_gateway(GatewaySettings(toolsets="backtest", call_budget_s=600))

    async def go() -> Any:
        async with Client(gateway) as client:
            return await client.call_tool("backtest_run_backtest", LONG_RUN, raise_on_error=False)

    answer = anyio.run(go)
    assert not answer.is_error, text(answer)
    assert answer.structured_content["strategy"] == "sma_crossover"
