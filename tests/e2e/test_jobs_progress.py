"""E2E: the official MCP client sees a real job's progress through the gateway over HTTP.

A small service built with the job contract (tests/unit/shared/job_app.py) runs embedded in
the gateway; the gateway's streamable-HTTP app is served by uvicorn in a thread; the `mcp`
SDK's ClientSession calls the job's tool and records the progress notifications it gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from tests.unit.shared.job_app import create_app, job_settings
from trading.cli import free_port, serve_in_thread

pytestmark = pytest.mark.e2e

Updates = list[tuple[float, float | None, str | None]]


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    """Serve the gateway (with the job service embedded) over streamable HTTP in a thread."""
    service = job_settings(tmp_path)
    specs = tmp_path / "openapi"
    specs.mkdir()
    (specs / "sims.json").write_text(json.dumps(create_app(service).openapi()), "utf-8")
    settings = GatewaySettings(
        spec_dir=specs, job_poll_interval_s=0.02, token=None, call_budget_s=600.0
    )
    gateway = build_gateway(settings, app_factories={"sims": lambda: create_app(service)})
    with serve_in_thread(http_app(gateway, settings), free_port()) as url:
        yield url


async def _call(url: str, tool: str, args: dict[str, Any], updates: Updates) -> Any:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    with anyio.fail_after(60):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60)) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session.call_tool(tool, args, progress_callback=on_progress)


def test_the_mcp_client_gets_the_jobs_progress_notifications(gateway_url: str) -> None:
    updates: Updates = []
    result = anyio.run(_call, gateway_url, "sims_run_steps", {"steps": 4}, updates)

    assert not result.is_error, result.content
    assert result.structured_content == {"steps": 4}
    assert updates[-4:] == [(float(k), 4.0, f"step {k}") for k in range(1, 5)]
    assert all(progress == 0.0 for progress, _, _ in updates[:-4])  # queued/running first


def test_a_mapped_jobs_progress_ends_at_its_total(gateway_url: str) -> None:
    updates: Updates = []
    result = anyio.run(_call, gateway_url, "sims_run_simulation", {"paths": 20}, updates)

    assert not result.is_error, result.content
    assert len(result.structured_content["paths"]) == 20
    assert updates and updates[-1] == (20.0, 20.0, "20 of 20 paths done")
    progress = [u[0] for u in updates]
    assert progress == sorted(set(progress))  # MCP progress only ever increases
