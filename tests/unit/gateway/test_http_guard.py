"""The gateway's HTTP transport, served by uvicorn: loopback by default, foreign `Host` and
`Origin` refused (403), wrong tokens limited per address (429 with Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from gateway_mcp.origins import host_name, origin_host
from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from tests.unit.gateway.test_server import create_widgets_app, write_specs
from trading.cli import free_port, serve_in_thread

TOKEN = "right-token"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "guard", "version": "0"},
    },
}
MCP = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKEN}"}


def serve_gateway(tmp_path: Path, **overrides: object) -> Iterator[str]:
    """Serve the gateway's HTTP app with a token set; yield its URL."""
    specs = write_specs(tmp_path / "openapi", widgets=create_widgets_app())
    (specs / "market.json").unlink()
    settings = GatewaySettings(
        mode="embedded",
        spec_dir=specs,
        token=SecretStr(TOKEN),
        **overrides,  # type: ignore[arg-type]
    )
    gateway = build_gateway(settings, app_factories={"widgets": create_widgets_app})
    with serve_in_thread(http_app(gateway, settings), free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway no test sends a wrong token to."""
    yield from serve_gateway(tmp_path_factory.mktemp("gateway-guard"))


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[str]:
    """A gateway that takes 3 failed authentications a minute from an address."""
    yield from serve_gateway(tmp_path, auth_failures_per_minute=3)


def test_the_gateway_binds_and_answers_loopback_only_by_default() -> None:
    settings = GatewaySettings()
    assert settings.host == "127.0.0.1"
    assert {host_name(h) for h in settings.allowed_hosts} == {"localhost", "127.0.0.1", "::1"}
    assert {host_name(h) for h in settings.allowed_origins} == {"localhost", "127.0.0.1", "::1"}


def test_host_names_and_origins_are_read_by_name() -> None:
    assert host_name("[::1]:8765") == "::1" and host_name("LocalHost:1") == "localhost"
    assert origin_host("http://localhost:3000") == "localhost"
    assert origin_host("null") is None and origin_host("file://x") is None


def test_a_loopback_client_is_served(gateway: str) -> None:
    for origin in (None, "http://localhost:6274", "http://127.0.0.1"):
        headers = {**MCP, **({"Origin": origin} if origin else {})}
        answer = httpx.post(f"{gateway}/mcp", json=INITIALIZE, headers=headers)
        assert answer.status_code == 200, (origin, answer.text)


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.example"}, {"Origin": "http://evil.example"}, {"Origin": "null"}],
    ids=["host", "origin", "null-origin"],
)
def test_a_foreign_host_or_origin_is_refused(gateway: str, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{gateway}/mcp", json=INITIALIZE, headers={**MCP, **headers})
    assert answer.status_code == 403
    problem = answer.json()
    assert problem["code"] in ("forbidden_host", "forbidden_origin")


def test_wrong_tokens_are_limited_per_address(limited_gateway: str) -> None:
    gateway = limited_gateway
    wrong = {**MCP, "Authorization": "Bearer guess"}
    statuses = [
        httpx.post(f"{gateway}/mcp", json=INITIALIZE, headers=wrong).status_code for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    refused = httpx.post(f"{gateway}/mcp", json=INITIALIZE, headers=MCP)  # even the right one
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert httpx.get(f"{gateway}/health").status_code == 200  # probes are never held up
