"""The layering holds by construction: import-linter's contracts pass, and catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("shared", "services", "gateway_mcp", "trading")


def _copy_tree(dest: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold_on_this_checkout() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("shared/leak.py", "import services.market.service", "shared imports no service"),
        ("shared/leak.py", "from gateway_mcp import server", "shared imports no service"),
        ("services/backtest/leak.py", "import services.market.repository", "one another"),
        ("gateway_mcp/leak.py", "from services.market import app", "the gateway imports no"),
        ("services/market/repository.py", "from services.market import service", "market: "),
        ("services/backtest/service/runs.py", "from services.backtest import routes", "backtest: "),
        ("services/predictor/repository.py", "import services.predictor.jobs", "predictor: "),
        ("services/portfolio/service.py", "import services.portfolio.scheduler", "portfolio: "),
        ("services/predictor/routes.py", "import services.predictor.repository", "routes never"),
    ],
)
def test_a_violation_breaks_the_build(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / module
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(f"{before}\n{line}\n", encoding="utf-8")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken), result.stdout
