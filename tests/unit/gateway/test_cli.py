"""`trading claude-config` prints a Claude Desktop entry that starts this checkout's gateway."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from trading.cli import app


def test_claude_config_names_this_checkouts_trading_script() -> None:
    result = CliRunner().invoke(app, ["claude-config"])
    assert result.exit_code == 0, result.output
    snippet = json.loads(result.stdout)
    entry = snippet["mcpServers"]["trading-platform"]
    assert entry["args"] == ["mcp"]
    command = Path(entry["command"])
    assert command.is_absolute() and command.name == "trading"
    assert command == Path(sys.executable).absolute().parent / "trading"
    assert command.exists()
    assert set(entry) == {"command", "args"}  # nothing else is needed


def test_mcp_command_documents_both_transports() -> None:
    result = CliRunner().invoke(app, ["mcp", "--help"])
    assert result.exit_code == 0
    assert "--http" in result.output and "--port" in result.output
