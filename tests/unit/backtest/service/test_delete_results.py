"""DELETE /results/{run_id}: a deleted run is gone, with its fills and its cached answers."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.backtest.service.test_schema_valid_input import BASE


def test_a_deleted_run_is_gone_with_its_fills_and_cached_answers(api: TestClient) -> None:
    answer = api.post("/backtest/backtest", json=BASE)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run_id"]
    urls = [
        f"/backtest/results/{run_id}",
        f"/backtest/results/{run_id}/chart.png",
        f"/backtest/trades/{run_id}",
    ]
    assert [api.get(u).status_code for u in urls] == [200, 200, 200]  # now cached too
    listed = api.get("/backtest/results", params={"limit": 1000}).json()["results"]
    assert run_id in {r["run_id"] for r in listed}

    deleted = api.delete(f"/backtest/results/{run_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    for url in urls:
        gone = api.get(url)
        assert gone.status_code == 404, url
        assert gone.json()["code"] == "run_not_found"
    listed = api.get("/backtest/results", params={"limit": 1000}).json()["results"]
    assert run_id not in {r["run_id"] for r in listed}
    again = api.delete(f"/backtest/results/{run_id}")
    assert again.status_code == 404 and again.json()["field"] == "run_id"
