"""The gateway follows the shared job contract: 202 + Location, JobStatus polls, MCP progress.

The service is a real app built with `shared.jobs` (tests/unit/shared/job_app.py), served
in-process by the gateway in embedded mode, called by an in-process fastmcp client.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import httpx2
from fastapi import FastAPI, Response
from fastmcp import Client

from gateway_mcp.jobs import status_url
from gateway_mcp.numbers import round_significant
from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from shared.jobs import accepted_responses
from tests.unit.shared.job_app import create_app, job_settings, simulate_path

Updates = list[tuple[float, float | None, str | None]]


def gateway_for(tmp_path: Path, factories: dict[str, Any], **gateway: Any) -> Any:
    specs = tmp_path / "openapi"
    specs.mkdir(exist_ok=True)
    for name, factory in factories.items():
        (specs / f"{name}.json").write_text(json.dumps(factory().openapi()), encoding="utf-8")
    settings = GatewaySettings(spec_dir=specs, job_poll_interval_s=0.01, **gateway)
    return build_gateway(settings, app_factories=factories)


def sims_gateway(tmp_path: Path, **gateway: Any) -> Any:
    settings = job_settings(tmp_path)
    return gateway_for(tmp_path, {"sims": lambda: create_app(settings)}, **gateway)


async def call(
    gateway: Any, tool: str, args: dict[str, Any], updates: Updates | None = None
) -> Any:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        assert updates is not None
        updates.append((progress, total, message))

    async with Client(gateway) as client:
        return await client.call_tool(
            tool,
            args,
            progress_handler=on_progress if updates is not None else None,
            raise_on_error=False,
        )


def test_job_tools_are_listed_with_the_status_and_cancel_tools(tmp_path: Path) -> None:
    async def go() -> dict[str, Any]:
        async with Client(sims_gateway(tmp_path)) as client:
            return {t.name: t for t in await client.list_tools()}

    tools = anyio.run(go)
    assert {"sims_run_simulation", "sims_get_job", "sims_cancel_job"} <= set(tools)
    run = tools["sims_run_simulation"]
    assert {"limit", "offset", "paths"} <= set(run.input_schema["properties"])
    assert "job" in (run.description or "")
    assert "job_id" in tools["sims_get_job"].input_schema["properties"]


def test_progress_notifications_come_from_the_jobs_progress(tmp_path: Path) -> None:
    updates: Updates = []
    result = anyio.run(call, sims_gateway(tmp_path), "sims_run_steps", {"steps": 3}, updates)

    assert not result.is_error, result.content
    assert result.structured_content == {"steps": 3}
    steps = [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    assert updates[-3:] == steps
    assert all(u[0] == 0.0 for u in updates[:-3])  # at most the queued/running status before
    assert len(updates) <= 4


def test_a_jobs_large_result_is_paged_like_any_answer(tmp_path: Path) -> None:
    updates: Updates = []
    result = anyio.run(call, sims_gateway(tmp_path), "sims_run_simulation", {"paths": 250}, updates)

    assert not result.is_error, result.content
    body = result.structured_content
    assert len(body["paths"]) == 100
    assert body["page"]["total"] == 250 and body["page"]["next_offset"] == 100
    expected = [simulate_path(seed) for seed in range(250)]
    # Numbers reach a model with 6 significant digits.
    assert [p["last"] for p in body["paths"]] == [round_significant(x) for x in expected[:100]]
    assert body["mean"] == round_significant(sum(expected) / 250)
    assert updates[-1] == (250.0, 250.0, "250 of 250 paths done")
    assert [u[0] for u in updates] == sorted({u[0] for u in updates})  # strictly increasing


def test_a_failed_job_is_a_tool_error_with_the_jobs_problem(tmp_path: Path) -> None:
    gateway = sims_gateway(tmp_path)
    domain = anyio.run(call, gateway, "sims_run_failure", {"kind": "domain"})
    bug = anyio.run(call, gateway, "sims_run_failure", {"kind": "bug"})

    assert domain.is_error
    assert domain.content[0].text == (
        "sims service error 422 validation_error: the simulation diverged at step 3 (field: steps)"
    )
    assert bug.is_error
    assert bug.content[0].text.startswith("sims service error 500 job_failed: ")
    # the exception stays in the service's log, under the id the answer quotes
    assert "ValueError" not in bug.content[0].text and "item 3" not in bug.content[0].text
    assert re.search(r"\(error id: [0-9a-f]{12}\)$", bug.content[0].text)


def test_a_result_url_is_fetched(tmp_path: Path) -> None:
    result = anyio.run(call, sims_gateway(tmp_path), "sims_run_stored", {})

    assert not result.is_error, result.content
    assert result.structured_content["rows"] == [0, 1, 2, 3, 4]
    assert len(result.structured_content["stored_for"]) == 36


def test_a_job_that_never_ends_times_out_with_a_clear_problem(tmp_path: Path) -> None:
    gateway = sims_gateway(tmp_path, job_timeout_s=0.3)
    result = anyio.run(call, gateway, "sims_run_spin", {"limit_s": 60})

    assert result.is_error
    text = result.content[0].text
    assert text.startswith("sims service error 504 job_timeout: The sims job did not finish")
    assert "it is still running, its status is at http://sims/jobs/" in text


def test_a_handle_past_the_budget_names_the_cancel_tool_and_it_cancels(tmp_path: Path) -> None:
    gateway = sims_gateway(tmp_path, call_budget_s=2.0)

    async def go() -> tuple[Any, Any, Any]:
        async with Client(gateway) as client:
            handle = await client.call_tool("sims_run_spin", {"limit_s": 60})
            job_id = handle.structured_content["job"]["id"]
            cancelled = await client.call_tool("sims_cancel_job", {"job_id": job_id})
            read = await client.call_tool("sims_get_job", {"job_id": job_id})
            return handle.structured_content, cancelled.structured_content, read.structured_content

    handle, cancelled, read = anyio.run(go)
    job_id = handle["job"]["id"]
    assert handle["job"]["status"] in ("queued", "running")
    assert handle["cancel_with"] == f'sims_cancel_job(job_id="{job_id}")'
    assert cancelled["status"] == "failed" and cancelled["error"]["code"] == "cancelled"
    assert read["status"] == "failed" and read["error"]["code"] == "cancelled"  # still readable


def test_unknown_jobs_are_404_problems_through_the_tools(tmp_path: Path) -> None:
    gateway = sims_gateway(tmp_path)
    missing = "00000000-0000-4000-8000-000000000000"
    got = anyio.run(call, gateway, "sims_get_job", {"job_id": missing})
    cancelled = anyio.run(call, gateway, "sims_cancel_job", {"job_id": missing})

    for result in (got, cancelled):
        assert result.is_error
        assert result.content[0].text.startswith("sims service error 404 job_not_found: ")


def create_legacy_app() -> FastAPI:
    """A service whose status resource speaks a synonym dialect, not the contract."""
    app = FastAPI(title="Legacy")

    @app.post("/runs", operation_id="start_run", status_code=202, responses=accepted_responses())
    async def start_run(response: Response) -> dict[str, str]:
        """Start a run."""
        response.headers["Location"] = "/runs/1"
        return {"job_id": "1"}

    @app.get("/runs/{run_id}", operation_id="get_run")
    async def get_run(run_id: str) -> dict[str, Any]:
        """Report a run in the old synonyms."""
        return {"state": "done", "progress": 1.0, "result": {"ok": True}}

    return app


def test_a_status_that_is_not_a_job_status_is_a_clear_502(tmp_path: Path) -> None:
    gateway = gateway_for(tmp_path, {"legacy": create_legacy_app})
    result = anyio.run(call, gateway, "legacy_start_run", {})

    assert result.is_error
    text = result.content[0].text
    assert text.startswith("legacy service error 502 upstream_unavailable: ")
    assert "is not a job status" in text


def test_only_a_202_with_a_location_is_followed() -> None:
    request = httpx2.Request("POST", "http://svc/base/runs")
    located = httpx2.Response(202, headers={"location": "jobs/7"})
    assert str(status_url(request, located)) == "http://svc/base/jobs/7"
    absolute = httpx2.Response(202, headers={"location": "/base/jobs/7"})
    assert str(status_url(request, absolute)) == "http://svc/base/jobs/7"
    assert status_url(request, httpx2.Response(202, json={"links": {"self": "/x"}})) is None
    assert status_url(request, httpx2.Response(201, headers={"location": "/x"})) is None
