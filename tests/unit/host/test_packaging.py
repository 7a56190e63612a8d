"""The built wheel carries what a non-editable install needs: specs, migrations, entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the project's wheel (no dependencies, no build isolation) into a temp folder.

    It is built from a copy of the sources, so setuptools' build/ never lands in the checkout.
    """
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, src / name)
    for package in ("shared", "services", "gateway_mcp", "trading", "openapi"):
        shutil.copytree(
            REPO / package,
            src / package,
            symlinks=True,  # gateway_mcp/specs -> ../openapi stays a link
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    subprocess.run(
        [sys.executable, "-m", *pip_wheel],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("trading_platform-*.whl")
    return built


def test_the_wheel_ships_every_spec_and_migration(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for spec in sorted((REPO / "openapi").glob("*.json")):
            packaged = f"gateway_mcp/specs/{spec.name}"
            assert packaged in names
            assert z.read(packaged) == spec.read_bytes()
        chains = [REPO / "shared/migrations/versions", *REPO.glob("services/*/migrations/versions")]
        revisions = {str(p.relative_to(REPO)) for c in chains for p in c.glob("*_0*.py")}
        assert len(revisions) >= len(chains) == 5  # the platform's chain and each service's
        assert revisions <= names
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "trading = trading.cli:app" in z.read(entry_points).decode()


def test_an_installed_gateway_finds_its_specs_without_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import json, gateway_mcp.settings as s; "
        "specs = sorted(p.name for p in s.GatewaySettings().spec_dir.glob('*.json')); "
        "print(json.dumps([s.__file__, specs]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    module_file, specs = json.loads(out.stdout)
    assert module_file.startswith(str(site))  # the installed copy, not the checkout
    assert specs == sorted(p.name for p in (REPO / "openapi").glob("*.json"))
