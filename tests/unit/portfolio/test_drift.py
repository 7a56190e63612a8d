"""Drift: a replayed deployment against its backtest shows no differing fill and ~no tracking
error; a deployment cut by a risk limit shows the fills it did not make."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.portfolio.test_replay import COSTS, deploy

SMA = {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}}


def test_a_replay_does_not_drift(platform: TestClient) -> None:
    dep = deploy(
        platform, {"strategy": SMA, "symbols": ["XOM"], "start_date": "2018-01-02", "costs": COSTS}
    )
    platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    drift = platform.get(f"/portfolio/deployments/{dep['id']}/drift")
    assert drift.status_code == 200, drift.text
    d = drift.json()
    assert d["fills_compared"] >= 2 and d["fills_differing"] == 0 and d["differences"] == []
    assert d["sessions"] > 400
    # the equities differ on the last day only, by the backtest's closing fill's costs
    # (0.2% slippage and 0.1% commission): at most 0.4%, spread over ~500 daily returns
    assert d["max_equity_gap"] < 0.004
    assert d["tracking_error"] < 0.005
    assert d["realised_costs"] == pytest.approx(d["modelled_costs"], rel=1e-9)


def test_a_capped_deployment_drifts(platform: TestClient) -> None:
    dep = deploy(
        platform,
        {
            "strategy": SMA,
            "symbols": ["XOM"],
            "start_date": "2018-01-02",
            "costs": COSTS,
            "risk": {"max_position_pct": 0.5},
        },
    )
    platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    d = platform.get(f"/portfolio/deployments/{dep['id']}/drift").json()
    assert d["fills_differing"] == d["fills_compared"]  # every fill is about half the size
    diff = d["differences"][0]
    assert diff["paper_shares"] < diff["backtest_shares"]
    assert d["tracking_error"] > 0.01


def test_drift_before_a_run_is_a_409_not_bad_input(platform: TestClient) -> None:
    # a valid request on a deployment that has not traded yet: a state of the data (409)
    dep = deploy(platform, {"strategy": SMA, "symbols": ["XOM"], "start_date": "2018-01-02"})
    r = platform.get(f"/portfolio/deployments/{dep['id']}/drift")
    assert r.status_code == 409 and r.json()["code"] == "insufficient_data", r.text
