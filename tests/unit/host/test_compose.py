"""docker-compose.yml is valid and wires the stack the README describes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_compose_declares_the_stack() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "market", "backtest", "predictor", "gateway"} <= set(
        spec["services"]
    )
    for peer in ("backtest", "predictor"):  # bars over HTTP from the market service
        assert spec["services"][peer]["environment"]["MARKET_URL"] == "http://market:8000"
        assert spec["services"][peer]["build"]["target"] == peer
    gateway_env = spec["services"]["gateway"]["environment"]
    assert {"GATEWAY_MARKET_URL", "GATEWAY_BACKTEST_URL", "GATEWAY_PREDICTOR_URL"} <= set(
        gateway_env
    )
    market = spec["services"]["market"]
    assert "services.market.app:create_app" in " ".join(market["command"])
    env = market["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["REDIS_URL"].startswith("redis://")


def _compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_validates_and_has_no_default_password() -> None:
    result = _compose_config(POSTGRES_PASSWORD="from-dotenv")
    assert result.returncode == 0, result.stderr
    missing = _compose_config()
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr


def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
            if current:
                stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_dockerfile_has_a_non_root_target_per_service_and_ml_only_in_the_predictor() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    for target in ("market", "backtest", "predictor", "gateway"):
        body = "\n".join(stages[target])
        assert "USER trading" in body, target
    assert "[ml]" in "\n".join(stages["predictor"])
    assert not any(
        "[ml]" in line for name, body in stages.items() if name != "predictor" for line in body
    )
    assert "-e ." not in (ROOT / "Dockerfile").read_text()  # installed from the wheel
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert spec["services"]["market"]["build"]["target"] == "market"
    assert spec["services"]["gateway"]["build"]["target"] == "gateway"
