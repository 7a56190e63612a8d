"""docker-compose's health checks, run as written against real servers: they fail when the
database is down (the market service) or when no service answers (the gateway)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR
from tests.conftest import market_settings
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR

ROOT = Path(__file__).resolve().parents[2]


def health_check(service: str, port: int) -> int:
    """Run a compose service's health check against 127.0.0.1:port; return its exit code."""
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = spec["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    own_port = {"market": "8000", "gateway": "8765"}[service]
    code = test[3].replace(f"127.0.0.1:{own_port}", f"127.0.0.1:{port}")
    assert code != test[3], "the check does not ask the service's own port"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_the_market_check_passes_when_healthy_and_fails_when_the_database_is_down(
    tmp_path: Path,
) -> None:
    healthy = create_app(market_settings(tmp_path, SHARED_CSV_DIR))
    down_url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    no_db = create_app(market_settings(tmp_path / "down", SHARED_CSV_DIR, database_url=down_url))
    port = free_port()
    with serve_in_thread(healthy, port):
        assert health_check("market", port) == 0
    port = free_port()
    with serve_in_thread(no_db, port):
        assert health_check("market", port) != 0


def test_the_gateway_check_passes_with_a_service_and_fails_without_one(tmp_path: Path) -> None:
    market = create_app(market_settings(tmp_path, SHARED_CSV_DIR))
    dead = f"http://127.0.0.1:{free_port()}"
    with serve_in_thread(market, free_port()) as market_url:
        for url, expected_ok in ((market_url, True), (dead, False)):
            settings = GatewaySettings(
                mode="remote", spec_dir=OPENAPI_DIR, service_urls={"market": url}
            )
            port = free_port()
            with serve_in_thread(http_app(build_gateway(settings), settings), port):
                assert (health_check("gateway", port) == 0) is expected_ok, url
