"""Job-style operations: the gateway follows a 202 job to its end and reports MCP progress."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Response
from fastmcp import Client
from pydantic import BaseModel

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from shared.api import install_error_handlers, problem_responses
from shared.errors import NotFoundError


class SimulationRequest(BaseModel):
    steps: int = 4
    fail: bool = False


class JobAccepted(BaseModel):
    job_id: str
    status: str


def create_jobs_app() -> FastAPI:
    """Return a fake service whose POST runs as a job (202 + Location), advancing per poll."""
    jobs: dict[str, dict[str, Any]] = {}
    app = FastAPI(title="Simulations")
    install_error_handlers(app)

    @app.post(
        "/simulations",
        operation_id="run_simulation",
        status_code=202,
        response_model=JobAccepted,
        responses=problem_responses(422),
    )
    async def run_simulation(body: SimulationRequest, response: Response) -> dict[str, str]:
        """Start a simulation; poll its job for progress and the result."""
        job_id = uuid.uuid4().hex
        jobs[job_id] = {"steps": body.steps, "done": 0, "fail": body.fail}
        response.headers["Location"] = f"/jobs/{job_id}"
        return {"job_id": job_id, "status": "queued"}

    @app.get("/jobs/{job_id}", operation_id="get_job", responses=problem_responses(404))
    async def get_job(job_id: str) -> dict[str, Any]:
        """Return a job's state."""
        job = jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        job["done"] += 1
        if job["done"] < job["steps"]:
            fraction = job["done"] / job["steps"]
            return {"status": "running", "progress": fraction, "message": f"step {job['done']}"}
        if job["fail"]:
            problem = {
                "type": "urn:problem:diverged",
                "title": "Simulation failed",
                "status": 422,
                "detail": "the simulation diverged at step 3",
                "code": "diverged",
            }
            return {"status": "failed", "error": problem}
        trades = [{"i": i, "pnl": 0.01 * i} for i in range(250)]
        return {"status": "succeeded", "progress": 1.0, "result": {"trades": trades, "total": 3.1}}

    return app


def gateway_with_jobs(tmp_path: Path) -> Any:
    specs = tmp_path / "openapi"
    specs.mkdir()
    (specs / "sims.json").write_text(json.dumps(create_jobs_app().openapi()), encoding="utf-8")
    settings = GatewaySettings(spec_dir=specs, job_poll_interval_s=0.01)
    return build_gateway(settings, app_factories={"sims": create_jobs_app})


def test_a_job_reports_progress_and_returns_its_capped_result(tmp_path: Path) -> None:
    gateway = gateway_with_jobs(tmp_path)
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async def go() -> Any:
        async with Client(gateway) as client:
            tool = {t.name: t for t in await client.list_tools()}["sims_run_simulation"]
            result = await client.call_tool(
                "sims_run_simulation", {"steps": 4}, progress_handler=on_progress
            )
            return tool, result

    tool, result = anyio.run(go)
    assert {"limit", "offset", "steps"} <= set(tool.input_schema["properties"])
    assert "job" in (tool.description or "")
    assert not result.is_error
    body = result.structured_content
    assert body["total"] == 3.1
    assert [t["i"] for t in body["trades"]] == list(range(100))
    assert body["page"]["total"] == 250 and body["page"]["next_offset"] == 100
    assert updates[0] == (0.0, None, "job accepted")
    assert [u[:2] for u in updates[1:]] == [(0.25, 1.0), (0.5, 1.0), (0.75, 1.0), (1.0, 1.0)]
    assert updates[1][2] == "step 1"


def test_a_failed_job_is_a_tool_error_with_the_jobs_problem(tmp_path: Path) -> None:
    gateway = gateway_with_jobs(tmp_path)

    async def go() -> Any:
        async with Client(gateway) as client:  # no progress handler: the call still works
            return await client.call_tool(
                "sims_run_simulation", {"steps": 3, "fail": True}, raise_on_error=False
            )

    result = anyio.run(go)
    assert result.is_error
    assert result.content[0].text == (
        "sims service error 422 diverged: the simulation diverged at step 3"
    )


def _reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    import httpx2

    content = json.dumps(body).encode() if body is not None else b""
    return httpx2.Response(status, content=content, headers=headers or {})


def test_job_polling_follows_see_other_and_body_status_urls() -> None:
    import httpx2

    from gateway_mcp.jobs import follow_job, status_url

    request = httpx2.Request("POST", "http://svc/base/runs", headers={"Authorization": "Bearer t"})
    accepted = _reply(202, {"job_id": "7", "links": {"self": "jobs/7"}})
    url = status_url(request, accepted)
    assert str(url) == "http://svc/base/jobs/7"
    assert status_url(request, _reply(202, {"job_id": "7"})) is None  # nothing to follow
    assert status_url(request, _reply(200, {"status_url": "/x"})) is None

    seen: list[tuple[str, str | None]] = []
    answers = [
        _reply(200, {"state": "running", "progress": {"done": 1, "total": 3}}),
        _reply(303, headers={"location": "/results/7"}),
        _reply(200, {"trades": []}),
    ]

    async def send(req: httpx2.Request) -> httpx2.Response:
        seen.append((str(req.url), req.headers.get("authorization")))
        return answers.pop(0)

    reports: list[tuple[float, float | None, str | None]] = []

    async def report(p: float, t: float | None, m: str | None) -> None:
        reports.append((p, t, m))

    assert url is not None
    final = anyio.run(
        lambda: follow_job(
            send, request, url, report=report, poll_interval_s=0.01, timeout_s=5, service="svc"
        )
    )
    assert final.status_code == 200 and final.json() == {"trades": []}
    assert seen == [
        ("http://svc/base/jobs/7", "Bearer t"),
        ("http://svc/base/jobs/7", "Bearer t"),
        ("http://svc/results/7", "Bearer t"),
    ]
    assert reports == [(0.0, None, "job accepted"), (1.0, 3.0, "running")]


def test_a_job_that_never_ends_times_out_with_a_clear_problem() -> None:
    import httpx2

    from gateway_mcp.jobs import follow_job

    async def send(req: httpx2.Request) -> httpx2.Response:
        return _reply(200, {"status": "running"})

    async def report(p: float, t: float | None, m: str | None) -> None:
        return None

    request = httpx2.Request("POST", "http://svc/runs")
    final = anyio.run(
        lambda: follow_job(
            send,
            request,
            httpx2.URL("http://svc/jobs/1"),
            report=report,
            poll_interval_s=0.01,
            timeout_s=0.05,
            service="backtest",
        )
    )
    assert final.status_code == 504
    assert final.json()["code"] == "job_timeout"
    assert "backtest job did not finish" in final.json()["detail"]
