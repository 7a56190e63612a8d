"""`POST /deployments/{id}/run` answers directly or, with more weekdays to process than
`PORTFOLIO_RUN_JOB_SESSIONS`, as a job (202 + Location) whose result is the same answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.unit.portfolio.conftest import build_platform, portfolio_settings, wait_for_job
from tests.unit.portfolio.test_replay import deploy, fills

BODY = {
    "strategy": {"name": "macd_trend", "params": {}},
    "symbols": ["MSFT"],
    "start_date": "2019-01-02",
    "warmup_period": 0,  # its own indicators warm it: four fills in the window
}


@pytest.fixture(scope="module")
def small_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A platform whose portfolio runs more than 100 weekdays as a job."""
    base = tmp_path_factory.mktemp("portfolio-jobs")
    settings = portfolio_settings(base / "portfolio", portfolio_run_job_sessions=100)
    with build_platform(base, settings) as client:
        yield client


def test_a_long_run_is_a_job_with_the_same_answer(small_jobs: TestClient) -> None:
    c = small_jobs
    direct = deploy(c, BODY)
    # 2019-01-02 .. 2019-05-31: 107 weekdays, over the threshold
    as_job = deploy(c, BODY)
    started = c.post(f"/portfolio/deployments/{as_job['id']}/run", json={"until": "2019-05-31"})
    assert started.status_code == 202, started.text
    assert started.headers["location"].startswith("/portfolio/jobs/")
    status = wait_for_job(c, started.headers["location"])
    assert status["status"] == "succeeded", status
    result = status["result"]
    assert result["deployment_id"] == as_job["id"] and result["sessions"] > 100
    # the same work in two direct calls (each under the threshold) gives the same fills
    for until in ("2019-03-29", "2019-05-31"):
        r = c.post(f"/portfolio/deployments/{direct['id']}/run", json={"until": until})
        assert r.status_code == 200, r.text
    strip = [
        {k: f[k] for k in ("timestamp", "symbol", "direction", "shares", "price")}
        for f in fills(c, direct["account_id"])
    ]
    got = [
        {k: f[k] for k in ("timestamp", "symbol", "direction", "shares", "price")}
        for f in fills(c, as_job["account_id"])
    ]
    assert got == strip and len(got) >= 1
    dep = c.get(f"/portfolio/deployments/{as_job['id']}").json()
    assert dep["last_session"] == "2019-05-31"
