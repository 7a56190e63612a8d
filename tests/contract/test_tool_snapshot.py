"""Contract: the MCP tool names the gateway builds from `openapi/` equal the committed snapshot.

Tool names are `<service>_<operation_id>`: renaming an operation, or dropping one, breaks
every Claude conversation that used it. A new spec in `openapi/` adds its tools here too;
after a deliberate change run `UPDATE_TOOL_SNAPSHOT=1 pytest tests/contract/test_tool_snapshot.py`
and commit `tests/contract/tool_names.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from trading.openapi import OPENAPI_DIR

SNAPSHOT = Path(__file__).with_name("tool_names.json")


def gateway_tool_names() -> list[str]:
    """Return the sorted tool names of a gateway over the committed specs (no service runs)."""
    gateway = build_gateway(GatewaySettings(mode="remote", spec_dir=OPENAPI_DIR, toolsets="all"))
    return sorted(t.name for t in asyncio.run(gateway.list_tools()))


def test_tool_names_match_the_committed_snapshot() -> None:
    names = gateway_tool_names()
    if os.environ.get("UPDATE_TOOL_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert names == expected, (
        "MCP tool names changed; if deliberate, run with UPDATE_TOOL_SNAPSHOT=1 and commit "
        f"{SNAPSHOT.name}. Added: {sorted(set(names) - set(expected))}, "
        f"removed: {sorted(set(expected) - set(names))}"
    )


def test_every_spec_operation_but_ops_routes_is_a_tool() -> None:
    names = set(gateway_tool_names())
    for spec_path in sorted(OPENAPI_DIR.glob("*.json")):
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        for operations in spec["paths"].values():
            for op in operations.values():
                tool = f"{spec_path.stem}_{op['operationId']}"
                if {"ops", "internal"} & set(op.get("tags", [])):  # the gateway excludes both
                    assert tool not in names
                else:
                    assert tool in names
    assert "market_health" not in names
