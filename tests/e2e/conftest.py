"""End to end: helpers for tests where a real MCP client starts `trading mcp` as a subprocess."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from services.market.settings import SHARED_CSV_DIR

REPO = Path(__file__).resolve().parents[2]
TRADING = Path(sys.executable).absolute().parent / "trading"
SNAPSHOT = REPO / "tests" / "contract" / "tool_names.json"
# Variables a gateway subprocess may inherit: nothing that configures the platform
# (PYTHONPATH only says which checkout's code runs: a worktree's, not the installed one).
_INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SYSTEMROOT",
    "USER",
    "LOGNAME",
    "PYTHONPATH",
)


def gateway_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Return a clean environment for a gateway subprocess: CSV data, state in data_dir."""
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(
        MARKET_PROVIDERS="csv",
        MARKET_DATA_DIR=str(SHARED_CSV_DIR),
        DATA_DIR=str(data_dir),
        XDG_DATA_HOME=str(data_dir),
        PYTHONUNBUFFERED="1",
        GATEWAY_LOG_LEVEL="INFO",
        # A call answers its job handle past the budget; only the budget's own test sets a
        # short one, so that no other test depends on how busy the machine is.
        GATEWAY_CALL_BUDGET_S="600",
        GATEWAY_TOOLSETS="all",  # every tool of the snapshot, paper trading's included
    )
    env.update(extra)
    return env


def snapshot_names() -> list[str]:
    """Return the committed, sorted MCP tool names."""
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def csv_closes(symbol: str) -> dict[str, float]:
    """Return date -> close of a symbol's CSV in the shared data folder."""
    with (SHARED_CSV_DIR / f"{symbol}.csv").open(newline="") as f:
        return {row["date"][:10]: float(row["close"]) for row in csv.DictReader(f)}


def child_pids(parent: int) -> set[int]:
    """Return the live child processes of parent (Linux /proc; empty set elsewhere)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children
