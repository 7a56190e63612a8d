"""The job contract over HTTP: 202 + Location under mounts, status and cancel routes, spec."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from shared.jobs import cancel_path
from tests.unit.shared.conftest import WAIT_S
from tests.unit.shared.job_app import create_app, job_settings
from trading.host import build_platform_app


def wait_done(client: TestClient, url: str) -> dict[str, Any]:
    """Poll a job's status URL until it has ended (bounded by WAIT_S); return its status."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"{url} did not end")


def platform(tmp_path: Path, **client: Any) -> TestClient:
    """Return a client of two job services mounted side by side, as `trading serve` does."""
    apps = {
        "predictor": create_app(job_settings(tmp_path / "predictor")),
        "backtest": create_app(job_settings(tmp_path / "backtest")),
    }
    return TestClient(build_platform_app(apps), **client)


def test_202_location_points_at_the_mounted_services_own_status(tmp_path: Path) -> None:
    with platform(tmp_path) as client:
        started = client.post("/backtest/simulations", json={"paths": 3})
        job = started.json()
        location = started.headers["location"]
        done = wait_done(client, location)
        stored = client.post("/backtest/stored")
        stored_done = wait_done(client, stored.headers["location"])
        fetched = client.get(stored_done["result_url"])
        other_service = client.get(location.replace("/backtest/", "/predictor/"))

    assert started.status_code == 202
    assert location == f"/backtest/jobs/{job['id']}"
    assert job["status"] == "queued" and job["kind"] == "simulation"
    assert job["request"] == {"paths": 3, "steps": 250, "where": "thread"}
    assert job["progress"]["done"] == 0.0 and job["progress"]["total"] is None
    assert job["progress"]["message"].startswith("queued: position 1 of ")
    assert done["status"] == "succeeded" and len(done["result"]["paths"]) == 3
    assert stored_done["result"] is None
    assert stored_done["result_url"] == f"/backtest/stored/{stored_done['id']}"
    assert fetched.status_code == 200 and fetched.json()["rows"] == [0, 1, 2, 3, 4]
    assert other_service.status_code == 404  # each service answers for its own jobs only
    assert other_service.json()["code"] == "job_not_found"


def test_location_keeps_a_proxy_root_path(tmp_path: Path) -> None:
    with platform(tmp_path, root_path="/api") as client:
        started = client.post("/api/backtest/simulations", json={"paths": 1})
        status = client.get(started.headers["location"])

    assert started.headers["location"] == f"/api/backtest/jobs/{started.json()['id']}"
    assert status.status_code == 200 and status.json()["id"] == started.json()["id"]


def test_status_and_cancel_answer_problems(tmp_path: Path) -> None:
    with TestClient(create_app(job_settings(tmp_path))) as client:
        missing = client.get("/jobs/00000000-0000-4000-8000-000000000000")
        malformed = client.post("/jobs/not-a-uuid/cancel")
        spinning = client.post("/spins", json={"limit_s": 60}).headers["location"]
        cancelled = client.post(cancel_path(spinning))
        again = client.post(cancel_path(spinning))
        still_readable = client.get(spinning)
        finished = wait_done(client, client.post("/simulations", json={}).headers["location"])
        too_late = client.post(f"/jobs/{finished['id']}/cancel")
        no_delete = client.delete(spinning)

    assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"
    assert missing.headers["content-type"] == "application/problem+json"
    assert malformed.status_code == 422 and malformed.json()["field"] == "job_id"
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "failed"
    assert cancelled.json()["error"]["code"] == "cancelled"
    assert again.status_code == 409 and again.json()["code"] == "job_finished"
    assert still_readable.status_code == 200 and still_readable.json() == cancelled.json()
    assert no_delete.status_code == 405  # a job is cancelled, never deleted
    assert too_late.status_code == 409
    assert "already ended (succeeded)" in too_late.json()["detail"]


def test_the_spec_declares_the_202_its_location_and_the_job_routes(tmp_path: Path) -> None:
    spec = create_app(job_settings(tmp_path)).openapi()
    post = spec["paths"]["/simulations"]["post"]
    get = spec["paths"]["/jobs/{job_id}"]["get"]
    cancel = spec["paths"]["/jobs/{job_id}/cancel"]["post"]
    assert "delete" not in spec["paths"]["/jobs/{job_id}"]

    accepted = post["responses"]["202"]
    assert "Location" in accepted["headers"]
    assert accepted["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobStatus"
    }
    assert get["operationId"] == "get_job" and cancel["operationId"] == "cancel_job"
    assert set(get["responses"]) == {"200", "404", "422"}
    assert set(cancel["responses"]) == {"200", "404", "409", "422"}
    for op in (get, cancel):
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/JobStatus"
        }
        problem = op["responses"]["404"]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/Problem"}
    status = spec["components"]["schemas"]["JobStatus"]
    assert status["properties"]["status"]["enum"] == ["queued", "running", "succeeded", "failed"]
    assert set(spec["components"]["schemas"]["JobProgress"]["properties"]) == {
        "done",
        "total",
        "message",
    }
