"""The tool context a model pays for: at most 32 kB for the default tool set, nothing lost."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
from fastmcp import Client

from gateway_mcp.context import (
    compact_schema,
    first_paragraph,
    first_sentence,
    model_visible_bytes,
    share_descriptions,
)
from gateway_mcp.server import build_gateway, platform_version
from gateway_mcp.settings import GatewaySettings
from services.backtest.language.functions import FUNCTIONS
from services.backtest.language.syntax import COMPACT_GRAMMAR

CONTEXT_BUDGET_BYTES = 32_000


def listed(settings: GatewaySettings) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        gateway = build_gateway(settings)
        async with Client(gateway) as client:
            tools = await client.list_tools()
            docs = await client.read_resource("docs://tools/backtest_run_backtest")
            return {"tools": tools, "gateway": gateway, "docs": docs}

    return anyio.run(go)


def test_the_default_tool_set_fits_the_context_budget_and_loses_nothing(data_env: Path) -> None:
    out = listed(GatewaySettings())
    tools = out["tools"]
    sizes = {t.name: model_visible_bytes(t.name, t.description, t.input_schema) for t in tools}
    total = sum(sizes.values())
    assert len(tools) >= 31
    assert total <= CONTEXT_BUDGET_BYTES, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    # The strategy union is one object naming its variants and where its schema is...
    run = next(t for t in tools if t.name == "backtest_run_backtest")
    strategy = run.input_schema["properties"]["strategy"]
    assert "sma_crossover" in strategy["description"]
    assert "docs://tools/backtest_run_backtest" in strategy["description"]
    assert run.input_schema["additionalProperties"] is False
    # ...and the full schema and description are one resource read away.
    full = json.loads(out["docs"][0].text)
    assert full["name"] == "backtest_run_backtest"
    assert len(full["description"]) > len(run.description or "")
    assert "sma_crossover" in json.dumps(full["input_schema"])
    # The server is the platform, not FastMCP.
    gateway = out["gateway"]
    assert gateway.name == "trading-platform"
    assert gateway.version == platform_version() != "4.1.2"


def test_the_strategy_tools_teach_the_language(data_env: Path) -> None:
    """A model writes rules from the tool list alone: validate is a tool, and saving's
    description carries the compact grammar, every function and two examples."""
    tools = {t.name: t for t in listed(GatewaySettings())["tools"]}
    assert "422" in (tools["backtest_validate_strategy"].description or "")
    save = tools["backtest_save_strategy"].description or ""
    assert f"Grammar: {COMPACT_GRAMMAR}." in save
    assert all(re.search(rf"\b{name}[|(]", save) for name in FUNCTIONS)
    assert save.count("\nExample: ") == 2
    assert "entry_long: rsi(close, $n) < 30 and close > sma(close, 200)" in save


def test_toolsets_select_groups(data_env: Path) -> None:
    out = listed(GatewaySettings(toolsets="market, backtest"))
    prefixes = {t.name.split("_", 1)[0] for t in out["tools"]}
    assert prefixes == {"market", "backtest"}


def groups(settings: GatewaySettings) -> set[str]:
    tools = anyio.run(build_gateway(settings).list_tools)
    return {t.name.split("_", 1)[0] for t in tools}


def test_paper_trading_tools_are_served_when_asked_for(data_env: Path) -> None:
    default = groups(GatewaySettings())
    assert "portfolio" not in default and {"market", "backtest", "predictor"} <= default
    assert groups(GatewaySettings(toolsets="all")) == default | {"portfolio"}
    assert groups(GatewaySettings(toolsets="market,portfolio")) == {"market", "portfolio"}


def test_compaction_keeps_types_and_summarises_big_unions() -> None:
    variants = [
        {
            "title": f"V{i}",
            "type": "object",
            "properties": {
                "name": {"const": f"v{i}", "type": "string"},
                "params": {"type": "object", "description": "x " * 200},
            },
        }
        for i in range(4)
    ]
    schema = {
        "type": "object",
        "properties": {
            "period": {
                "title": "Period",
                "type": "integer",
                "minimum": 2.0,
                "description": "Window, bars. More words that a model does not need.",
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "examples": ["a"]},
            "rule": {"anyOf": variants, "description": "The rule. Long text."},
        },
    }
    out = compact_schema(schema, "docs://tools/t")
    assert out["properties"]["period"] == {
        "type": "integer",
        "minimum": 2,
        "description": "Window, bars.",
    }
    assert out["properties"]["note"] == {"type": "string"}
    rule = out["properties"]["rule"]
    assert rule["type"] == "object"
    assert "`name` one of: v0, v1, v2, v3" in rule["description"]
    assert "docs://tools/t" in rule["description"]


def test_descriptions_are_cut_at_sentences_and_shared_arguments_described_once() -> None:
    assert first_sentence("One thing, e.g. this. Then more.") == "One thing, e.g. this."
    text = "First line of a\nparagraph. Second sentence.\n\nAnother paragraph."
    assert first_paragraph(text) == "First line of a paragraph. Second sentence."
    arg = {"type": "number", "description": "Per share."}
    schemas, owners = share_descriptions(
        {
            "a": {"properties": {"fee": dict(arg), "x": {"type": "integer"}}},
            "b": {"properties": {"fee": dict(arg)}},
        }
    )
    assert schemas["a"]["properties"]["fee"] == arg
    assert schemas["b"]["properties"]["fee"] == {"type": "number"}
    assert owners == {"b": "a"}
