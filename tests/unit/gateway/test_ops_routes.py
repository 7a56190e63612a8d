"""The gateway's own ops routes: `/health` (each service's state) and `/metrics`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from tests.unit.shared.limits_app import create_app, limits_settings
from trading.cli import free_port


def spec_dir(tmp_path: Path, *names: str) -> Path:
    """Write the limits test service's spec under each name into a fresh folder."""
    directory = tmp_path / "openapi"
    directory.mkdir()
    spec = create_app(limits_settings(tmp_path)).openapi()
    for name in names:
        (directory / f"{name}.json").write_text(json.dumps(spec), encoding="utf-8")
    return directory


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def test_health_reports_every_service_and_metrics_count_tool_calls(tmp_path: Path) -> None:
    settings = GatewaySettings(spec_dir=spec_dir(tmp_path, "limits", "ghost"))
    gateway = build_gateway(
        settings, app_factories={"limits": lambda: create_app(limits_settings(tmp_path))}
    )
    with TestClient(http_app(gateway, settings), base_url="http://localhost") as client:
        health = client.get("/health")
        before = client.get("/metrics").text

        async def call() -> Any:
            async with Client(gateway) as mcp:
                return await mcp.call_tool("limits_echo", {"n": 3}, raise_on_error=False)

        result = anyio.run(call)
        after = client.get("/metrics")

    # ghost has a spec but no service: the gateway still answers, degraded, and says why.
    assert health.status_code == 200
    state = health.json()
    assert state["status"] == "degraded"
    assert state["services"]["limits"]["status"] == "ok"
    assert state["services"]["limits"]["database"] == "ok"
    assert state["services"]["ghost"]["status"] == "unavailable"

    assert not result.is_error and result.structured_content == {"n": 3}
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")

    def delta(name: str, **labels: str) -> float:
        return (sample(after.text, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert delta("mcp_tool_calls_total", tool="limits_echo", outcome="ok") == 1
    assert delta("gateway_upstream_requests_total", service="limits", status="200") >= 1
    gateway_health = {"service": "gateway", "operation": "/health", "status": "200"}
    assert (sample(after.text, "http_requests_total", **gateway_health) or 0) >= 1
    assert sample(
        after.text, "http_requests_total", service="gateway", operation="/metrics", status="200"
    )


def test_health_is_503_when_no_service_answers(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = GatewaySettings(
        mode="remote",
        spec_dir=spec_dir(tmp_path, "limits"),
        service_urls={"limits": dead},
        health_timeout_s=5,
    )
    gateway = build_gateway(settings)
    with TestClient(http_app(gateway, settings), base_url="http://localhost") as client:
        health = client.get("/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert body["services"]["limits"]["status"] == "unavailable"
    assert body["services"]["limits"]["http_status"] == 503


def test_ops_routes_need_no_token_and_are_never_tools(tmp_path: Path) -> None:
    from pydantic import SecretStr

    settings = GatewaySettings(spec_dir=spec_dir(tmp_path, "limits"), token=SecretStr("gw"))
    gateway = build_gateway(
        settings, app_factories={"limits": lambda: create_app(limits_settings(tmp_path))}
    )
    with TestClient(http_app(gateway, settings), base_url="http://localhost") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.post("/mcp", json={}).status_code == 401
    names = {t.name for t in anyio.run(gateway.list_tools)}
    assert "limits_echo" in names
    assert not {"limits_health", "limits_metrics"} & names


def test_the_instructions_say_how_to_meet_a_limit(tmp_path: Path) -> None:
    gateway = build_gateway(GatewaySettings(mode="remote", spec_dir=spec_dir(tmp_path, "limits")))
    assert "rate_limited" in (gateway.instructions or "")
    assert "seconds to retry" in (gateway.instructions or "")


def test_a_rate_limited_call_is_a_tool_error_that_says_when_to_retry(tmp_path: Path) -> None:
    settings = GatewaySettings(spec_dir=spec_dir(tmp_path, "limits"))
    service_settings = limits_settings(tmp_path, rate_limit_per_minute=1)
    gateway = build_gateway(
        settings, app_factories={"limits": lambda: create_app(service_settings)}
    )

    async def calls() -> list[Any]:
        async with Client(gateway) as mcp:
            return [
                await mcp.call_tool("limits_echo", {"n": i}, raise_on_error=False) for i in (1, 2)
            ]

    first, second = anyio.run(calls)
    assert not first.is_error
    assert second.is_error
    message = "".join(getattr(block, "text", "") for block in second.content)
    assert message.startswith("limits service error 429 rate_limited: Rate limit reached")
    assert "retry after" in message
