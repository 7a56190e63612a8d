"""E2E over stdio: the official `mcp` SDK client starts `trading mcp` exactly as Claude Desktop
does (`{"command": ".../.venv/bin/trading", "args": ["mcp"]}`) and uses real CSV data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from tests.e2e.conftest import TRADING, child_pids, csv_closes, gateway_env, snapshot_names

pytestmark = pytest.mark.e2e


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def run_session(tmp_path: Path, scenario: Any) -> tuple[Any, list[BaseException], str]:
    """Start the gateway over stdio, run scenario(session); return value, stray lines, stderr."""
    if not TRADING.exists():
        pytest.fail(f"console script missing: {TRADING} (run `make install`)")
    stray: list[BaseException] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, BaseException):  # a stdout line that was not an MCP message
            stray.append(message)

    params = StdioServerParameters(
        command=str(TRADING), args=["mcp"], env=gateway_env(tmp_path), cwd=str(tmp_path)
    )
    stderr_path = tmp_path / "gateway-stderr.log"
    with stderr_path.open("w") as errlog:
        with anyio.fail_after(45):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write, message_handler=on_message) as session,
            ):
                init = await session.initialize()
                assert init.server_info.name == "trading-platform"
                value = await scenario(session)
    return value, stray, stderr_path.read_text()


def test_stdio_gateway_lists_snapshot_tools_and_returns_real_data(tmp_path: Path) -> None:
    before = child_pids(os.getpid())
    closes = csv_closes("AAPL")

    async def scenario(session: ClientSession) -> dict[str, Any]:
        tools = await session.list_tools()
        price = await session.call_tool("market_get_price", {"symbol": "AAPL"})
        hist = await session.call_tool(
            "market_get_historical",
            {"symbol": "aapl", "start": "2023-10-02", "end": "2023-10-27"},
        )
        page = await session.call_tool(
            "market_get_historical",
            {"symbol": "AAPL", "start": "2015-01-01", "limit": 5, "offset": -5},
        )
        return {"tools": tools.tools, "price": price, "hist": hist, "page": page}

    out, stray, stderr = anyio.run(run_session, tmp_path, scenario)

    assert not stray, f"non-protocol output on stdout: {stray[:3]}"
    assert "Update available" not in stderr
    assert sorted(t.name for t in out["tools"]) == snapshot_names()
    by_name = {t.name: t for t in out["tools"]}
    get_price = by_name["market_get_price"]  # title, description, arguments: from the spec
    assert get_price.title == "Latest price of a symbol"
    assert (get_price.description or "").startswith("Return the latest daily close of a symbol")
    assert get_price.input_schema["required"] == ["symbol"]

    price = out["price"]
    assert not price.is_error, text_of(price)
    quote = price.structured_content
    assert quote["symbol"] == "AAPL"
    assert quote["timestamp"].startswith("2023-10-27")
    assert quote["price"] == pytest.approx(closes["2023-10-27"])
    assert json.loads(text_of(price))["price"] == quote["price"]

    hist = out["hist"]
    assert not hist.is_error, text_of(hist)
    bars = hist.structured_content["bars"]
    expected = [d for d in closes if "2023-10-02" <= d <= "2023-10-27"]
    assert [b["timestamp"][:10] for b in bars] == expected
    assert [b["close"] for b in bars] == pytest.approx([closes[d] for d in expected])
    assert "page" not in hist.structured_content  # 20 bars: nothing left out

    paged = out["page"].structured_content
    assert [b["timestamp"][:10] for b in paged["bars"]] == sorted(closes)[-5:]
    assert paged["page"]["total"] == sum(1 for d in closes if d >= "2015-01-01")
    assert paged["page"]["returned"] == 5

    assert child_pids(os.getpid()) <= before, "the gateway subprocess was left running"


def test_stdio_gateway_turns_bad_input_into_clean_tool_errors(tmp_path: Path) -> None:
    async def scenario(session: ClientSession) -> list[CallToolResult]:
        return [
            await session.call_tool("market_get_price", {"symbol": "BAD!!"}),
            await session.call_tool("market_get_price", {"symbol": "ZZZZZZ"}),
            await session.call_tool("market_get_price", {"symbol": "MSFT"}),
        ]

    (bad, unknown, ok), stray, _ = anyio.run(run_session, tmp_path, scenario)

    assert not stray
    assert bad.is_error
    assert text_of(bad).startswith("market service error 422 validation_error: ")
    assert "(field: symbol)" in text_of(bad)
    assert unknown.is_error
    assert text_of(unknown).startswith("market service error 404 symbol_not_found: ")
    assert "ZZZZZZ" in text_of(unknown)
    assert not ok.is_error  # an error leaves the session serving
    assert ok.structured_content["symbol"] == "MSFT"
