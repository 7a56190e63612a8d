"""Long work as jobs (the shared job contract): 202 + Location under the mount, progress,
the same answer as inline work, cancellation; and runs that outlive their process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from shared.http import unregister_local_app
from shared.jobs import cancel_path
from tests.unit.backtest.service.conftest import GOOG_SMA, platform_client, wait_done

SEARCH = {
    **GOOG_SMA,
    "param_grid": {"fast": [5, 10, 15, 20], "slow": [30, 60, 90]},
    "constraints": ["fast < slow"],
}
# What differs between two runs of one search: timings, and each is stored under its own id.
TIMING = {"elapsed_s", "backtests_per_second", "run_id", "created_at", "links"}


def start(client: TestClient, path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """POST work that must become a job; return its Location and the 202 body."""
    answer = client.post(f"/backtest/{path}", json=body)
    assert answer.status_code == 202, answer.text
    return answer.headers["location"], answer.json()


def without(d: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def test_a_search_too_big_to_answer_runs_as_a_job_with_the_same_result(
    api: TestClient, jobs_api: TestClient
) -> None:
    location, job = start(jobs_api, "optimize", SEARCH)
    done = wait_done(jobs_api, location)
    inline = api.post("/backtest/optimize", json=SEARCH)

    assert location == f"/backtest/jobs/{job['id']}"
    assert job["kind"] == "optimize" and job["status"] in ("queued", "running")
    assert job["request"]["param_grid"] == SEARCH["param_grid"]
    assert done["status"] == "succeeded", done["error"]
    assert inline.status_code == 200
    assert without(done["result"], TIMING) == without(inline.json(), TIMING)
    assert done["progress"]["done"] == done["progress"]["total"]


def test_a_walk_forward_job_reports_its_windows(jobs_api: TestClient) -> None:
    location, _ = start(
        jobs_api, "walk_forward", {**SEARCH, "train_period": 504, "test_period": 252}
    )
    done = wait_done(jobs_api, location)

    assert done["status"] == "succeeded", done["error"]
    n = done["result"]["n_windows"]
    assert done["progress"]["total"] == n and done["progress"]["done"] == n
    assert done["progress"]["message"] == f"{n} of {n} windows done"


def test_a_monte_carlo_job_matches_the_inline_answer(api: TestClient, jobs_api: TestClient) -> None:
    body = {"config": GOOG_SMA, "n_runs": 300, "seed": 11}
    location, _ = start(jobs_api, "monte_carlo", body)
    done = wait_done(jobs_api, location)
    inline = api.post("/backtest/monte_carlo", json=body).json()

    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert without(result, {"run_id"}) == without(inline, {"run_id"})
    assert jobs_api.get(f"/backtest/results/{result['run_id']}").status_code == 200


def test_a_large_portfolio_backtest_runs_as_a_job_and_is_stored(jobs_api: TestClient) -> None:
    body = {**GOOG_SMA, "symbol": None, "symbols": ["KO", "PG"], "max_positions": 2}
    location, _ = start(jobs_api, "backtest", body)
    done = wait_done(jobs_api, location)

    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["links"]["result"] == f"/backtest/results/{result['run_id']}"
    stored = jobs_api.get(result["links"]["result"])
    assert stored.status_code == 200 and stored.json() == result


def test_a_running_job_can_be_cancelled(jobs_api: TestClient) -> None:
    body = {
        **GOOG_SMA,
        "symbol": "AAPL",
        "start_date": "2003-11-01",
        "end_date": "2023-10-27",
        "param_grid": {"fast": {"start": 2, "stop": 60, "step": 1}, "slow": [80, 120, 160]},
        "test_period": 21,
    }
    location, _ = start(jobs_api, "walk_forward", body)
    cancelled = jobs_api.post(cancel_path(location))
    done = wait_done(jobs_api, location)

    assert cancelled.status_code == 200, cancelled.text
    assert done["status"] == "failed" and done["error"]["code"] == "cancelled"
    assert done["result"] is None


def test_runs_survive_a_restart_of_the_service(tmp_path: Path) -> None:
    with platform_client(tmp_path) as first:
        run = first.post("/backtest/backtest", json=GOOG_SMA).json()
        fills = first.get(f"/backtest/trades/{run['run_id']}", params={"limit": 1000}).json()
        png = first.get(f"/backtest/results/{run['run_id']}/chart.png").content
    unregister_local_app("market")
    unregister_local_app("backtest")
    with platform_client(tmp_path) as second:
        again = second.get(f"/backtest/results/{run['run_id']}").json()
        fills_again = second.get(f"/backtest/trades/{run['run_id']}", params={"limit": 1000}).json()
        png_again = second.get(f"/backtest/results/{run['run_id']}/chart.png").content
        listed = second.get("/backtest/results").json()
    unregister_local_app("market")
    unregister_local_app("backtest")

    assert again == run
    assert fills_again == fills
    assert png_again == png
    assert [r["run_id"] for r in listed["results"]] == [run["run_id"]]


def test_a_cancel_in_the_cscv_phase_stops_it_before_the_slot_is_freed(
    jobs_api: TestClient, monkeypatch: Any
) -> None:
    import time

    from services.backtest import metrics

    kernel = metrics.cscv_logits_nb
    calls = {"started": 0, "running": 0}

    def counted(*args: Any) -> Any:
        calls["started"] += 1
        calls["running"] += 1
        try:
            return kernel(*args)
        finally:
            calls["running"] -= 1

    monkeypatch.setattr(metrics, "cscv_logits_nb", counted)
    body = {  # ~60,000 pairs on 45 bars: a quick sweep, then 12,870 CSCV splits of them
        **GOOG_SMA,
        "start_date": "2010-01-04",
        "end_date": "2010-03-09",
        "pbo_splits": 16,
        "param_grid": {
            "fast": {"start": 2, "stop": 200, "step": 1},
            "slow": {"start": 3, "stop": 400, "step": 1},
        },
    }
    location, _ = start(jobs_api, "optimize", body)
    deadline = time.monotonic() + 120  # a safety bound, not a speed claim
    while calls["started"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled = jobs_api.post(cancel_path(location))
    mounted = {getattr(r, "path", ""): r for r in jobs_api.app.routes}  # type: ignore[attr-defined]
    runner = mounted["/backtest"].app.state.jobs
    while runner._active and time.monotonic() < deadline:  # the slot is held until it stops
        time.sleep(0.001)
    running_when_freed = calls["running"]
    done = wait_done(jobs_api, location)

    assert cancelled.status_code == 200
    assert done["status"] == "failed" and done["error"]["code"] == "cancelled"
    assert not runner._active and running_when_freed == 0  # freed only once it had stopped
    assert 1 <= calls["started"] < 39  # stopped between chunks, not after all 39
