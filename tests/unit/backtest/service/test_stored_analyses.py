"""Every analysis is stored and addressable (walk-forwards and searches get a `run_id`, inline
or as a job), and coverage is never silent (a backtest, walk-forward or search on dates past
the data says where the bars end; dates without bars are a 404 `no_data`).

Real CSV bars through the co-hosted market service; the shared files end 2023-10-27.
"""

from __future__ import annotations

import io
import uuid
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.backtest.analyses import Analyses, OutdatedRunError
from services.backtest.engine.analysis import monte_carlo
from services.backtest.resampling import default_block
from tests.unit.backtest.service.conftest import GOOG_SMA, wait_done

WALK = {**GOOG_SMA, "param_grid": {"fast": [5, 10]}, "train_period": 504, "test_period": 126}
SEARCH = {**GOOG_SMA, "param_grid": {"fast": [5, 10, 20], "slow": [30, 60]}}
# 2024 is past every shared file's last bar (2023-10-27): 295 NYSE sessions from 2023-10-30
# to 2024-12-31 (exchange_calendars XNYS; tests/unit/market/test_coverage.py counts them).
PAST_THE_DATA = {"symbol": "AAPL", "start_date": "2020-01-01", "end_date": "2024-12-31"}
END_NOTE = "AAPL: the bars end 2023-10-27, 295 completed session(s) before the asked end 2024-12-31"


def post(api: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(f"/backtest/{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_walk_forward_is_stored_and_answered_again_by_its_id(api: TestClient) -> None:
    walked = post(api, "walk_forward", WALK)
    run_id = walked["run_id"]
    again = api.get(f"/backtest/results/{run_id}")
    full = api.get(f"/backtest/results/{run_id}", params={"equity_points": 20_000}).json()
    listed = api.get("/backtest/results", params={"kind": "walk_forward"}).json()
    everything = api.get("/backtest/results", params={"limit": 1000}).json()

    assert walked["kind"] == "walk_forward" and walked["links"] == {
        "result": f"/backtest/results/{run_id}",
        "chart": f"/backtest/results/{run_id}/chart.png",
    }
    assert again.status_code == 200 and again.json() == walked
    curve = full["equity"]  # the whole stitched out-of-sample equity is stored
    assert curve["points"] == curve["total_points"] == 126 * walked["n_windows"]
    assert curve["timestamps"][0] == walked["windows"][0]["test_start"]
    assert curve["equity"][-1] == pytest.approx(walked["metrics"]["final_capital"], rel=1e-12)
    row = next(r for r in listed["results"] if r["run_id"] == run_id)
    assert row["kind"] == "walk_forward" and row["symbols"] == ["GOOG"]
    assert row["final_capital"] == walked["metrics"]["final_capital"]
    assert {r["kind"] for r in listed["results"]} == {"walk_forward"}
    assert run_id in {r["run_id"] for r in everything["results"]}


def test_a_walk_forwards_chart_draws_its_stitched_equity(api: TestClient) -> None:
    import matplotlib.image

    walked = post(api, "walk_forward", WALK)
    png = api.get(f"/backtest/results/{walked['run_id']}/chart.png", params={"width": 800})

    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    pixels = matplotlib.image.imread(io.BytesIO(png.content), format="png")
    assert pixels.shape[:2] == (600, 800) and pixels[..., :3].std() > 0.05


def test_a_search_is_stored_listed_and_has_no_chart(api: TestClient) -> None:
    searched = post(api, "optimize", SEARCH)
    run_id = searched["run_id"]
    again = api.get(f"/backtest/results/{run_id}")
    listed = api.get("/backtest/results", params={"kind": "optimization"}).json()
    chart = api.get(f"/backtest/results/{run_id}/chart.png")
    resample = api.post("/backtest/monte_carlo", json={"run_id": run_id, "n_runs": 10})

    assert searched["kind"] == "optimization" and searched["links"]["chart"] is None
    assert again.status_code == 200 and again.json() == searched
    row = next(r for r in listed["results"] if r["run_id"] == run_id)
    assert row["sharpe_ratio"] == searched["top"][0]["metrics"]["sharpe_ratio"]
    assert chart.status_code == 404 and chart.json()["code"] == "no_chart"
    assert resample.status_code == 422 and resample.json()["field"] == "run_id"


def test_monte_carlo_of_a_walk_forward_resamples_its_stitched_returns(api: TestClient) -> None:
    walked = post(api, "walk_forward", WALK)
    full = api.get(f"/backtest/results/{walked['run_id']}", params={"equity_points": 20_000}).json()
    mc = post(api, "monte_carlo", {"run_id": walked["run_id"], "n_runs": 500, "seed": 3})

    equity = np.asarray(full["equity"]["equity"])
    returns = np.diff(np.concatenate(([10_000.0], equity))) / np.concatenate(
        ([10_000.0], equity[:-1])
    )
    block = default_block(returns.size)
    engine = monte_carlo(np.array([]), returns, n_runs=500, block=block, seed=3)
    median = float(np.percentile(engine.blocks.final_return, 50))

    assert mc["run_id"] == walked["run_id"] and mc["block"] == block
    assert mc["actual_total_return"] == pytest.approx(walked["metrics"]["total_return"])
    assert mc["actual_max_drawdown"] == pytest.approx(walked["metrics"]["max_drawdown"])
    assert mc["n_trades"] == 0 and mc["trade_bootstrap"] is None
    assert mc["block_bootstrap"]["final_return"]["p50"] == pytest.approx(median, rel=1e-9)
    assert "walk-forward keeps its stitched out-of-sample bar returns" in mc["reading"]


def test_a_walk_forward_job_is_stored_for_a_client_that_left(jobs_api: TestClient) -> None:
    started = jobs_api.post("/backtest/walk_forward", json=WALK)
    assert started.status_code == 202, started.text
    done = wait_done(jobs_api, started.headers["location"])
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    # a client that gave up on the job finds it by listing, then reads it by id
    listed = jobs_api.get("/backtest/results", params={"kind": "walk_forward"}).json()
    again = jobs_api.get(f"/backtest/results/{result['run_id']}").json()

    assert result["run_id"] in {r["run_id"] for r in listed["results"]}
    assert again == result
    assert result["links"]["result"] == f"/backtest/results/{result['run_id']}"


# ---- coverage ---------------------------------------------------------------------------


def test_a_backtest_past_the_data_says_where_its_bars_end(api: TestClient) -> None:
    body = post(api, "backtest", {**GOOG_SMA, **PAST_THE_DATA})
    inside = post(api, "backtest", {**GOOG_SMA, **PAST_THE_DATA, "end_date": "2023-10-27"})

    assert body["end"] == "2023-10-27" and body["start"] == "2020-01-02"
    assert any(n.startswith(END_NOTE) for n in body["notes"])
    assert not any("the bars end" in n or "the bars start" in n for n in inside["notes"])


def test_a_walk_forward_and_a_search_past_the_data_say_so_too(api: TestClient) -> None:
    walked = post(api, "walk_forward", {**WALK, **PAST_THE_DATA})
    searched = post(api, "optimize", {**SEARCH, **PAST_THE_DATA})
    stored = api.get(f"/backtest/results/{walked['run_id']}").json()

    assert any(n.startswith(END_NOTE) for n in walked["notes"])
    assert any(n.startswith(END_NOTE) for n in searched["notes"])
    assert stored["notes"] == walked["notes"]


def test_dates_without_bars_are_a_404_no_data_naming_the_range_there_is(api: TestClient) -> None:
    answer = api.post(
        "/backtest/backtest",
        json={**GOOG_SMA, "symbol": "AAPL", "start_date": "2024-01-01", "end_date": "2024-12-31"},
    )

    assert answer.status_code == 404, answer.text
    problem = answer.json()
    assert problem["code"] == "no_data" and problem["field"] == "start_date"
    assert "2003-10-30..2023-10-27" in problem["detail"]


def test_a_stored_answer_of_another_shape_is_a_problem_not_a_500() -> None:
    # a row stored by an older version whose answer lacked fields this one requires
    row = SimpleNamespace(kind="optimization", run_id=uuid.uuid4(), result={"strategy": "x"})
    with pytest.raises(OutdatedRunError) as caught:
        Analyses.answer(row, equity_points=10)
    assert caught.value.status == 404 and caught.value.field == "run_id"
