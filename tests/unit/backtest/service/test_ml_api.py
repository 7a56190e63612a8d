"""`ml_ensemble` end to end in-process: market, predictor and backtest co-hosted as `trading
serve` hosts them, real AAPL bars, embedded SQLite, training jobs in a real worker process.
The backtest reads the predictor only over its HTTP contract. XGBoost-only models keep it
quick (the LSTM member goes through the same contract)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.backtest.app import create_app as backtest_app
from services.market.app import create_app as market_app
from services.predictor.app import create_app as predictor_app
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.conftest import market_settings
from tests.unit.backtest.service.conftest import backtest_settings
from trading.host import build_platform_app

B, P = "/backtest", "/predictor"
TRAIN = {
    "symbols": ["AAPL"],
    "start_date": "2015-01-01",
    "end_date": "2019-06-28",
    "models": ["xgboost"],
    "seed": 7,
}
RUN: dict[str, Any] = {
    "symbol": "AAPL",
    "start_date": "2019-07-01",
    "end_date": "2020-12-31",
    "initial_capital": 10_000,
    "strategy": {"name": "ml_ensemble", "params": {"min_confidence": 0.0}},
    "commission_rate": 0.001,
    "slippage": 0.0,
    "warmup_period": 0,
}
WF: dict[str, Any] = {
    "symbol": "AAPL",
    "start_date": "2017-01-01",
    "end_date": "2019-12-31",
    "strategy": {
        "name": "ml_ensemble",
        "params": {"min_confidence": 0.0, "training": {"models": ["xgboost"], "seed": 3}},
    },
    "train_period": 252,
    "test_period": 84,
    "retrain_every": 2,
    "warmup_period": 0,
}


def wait_job(client: TestClient, answer: Any, limit_s: float = 300.0) -> dict[str, Any]:
    """Follow a 202 job answer to its end; return the final status and the progress seen."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    deadline = time.monotonic() + limit_s
    messages: list[str] = []
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(location).json()
        message = status["progress"].get("message")
        if message and (not messages or messages[-1] != message):
            messages.append(message)
        if status["status"] in ("succeeded", "failed"):
            status["messages"] = messages
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {location} did not end within {limit_s} s")


@dataclass
class Platform:
    client: TestClient
    version: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, csv_dir: Path) -> Iterator[Platform]:
    """Market + predictor + backtest on one SQLite file; version 1.0.0 of `default` trained."""
    tmp = tmp_path_factory.mktemp("ml-backtest")
    db = f"sqlite+aiosqlite:///{tmp / 'trading.db'}"
    apps = {
        "market": market_app(market_settings(tmp, csv_dir, database_url=db)),
        "predictor": predictor_app(
            PredictorSettings(
                data_dir=tmp,
                database_url=db,
                redis_url=None,
                job_progress_interval_s=0.05,
                dask_scheduler_address=None,
            )
        ),
        "backtest": backtest_app(
            backtest_settings(tmp, database_url=db, job_progress_interval_s=0.05)
        ),
    }
    try:
        with TestClient(build_platform_app(apps)) as client:
            status = wait_job(client, client.post(f"{P}/train", json=TRAIN))
            assert status["status"] == "succeeded", status
            yield Platform(client, status["result"]["version"])
    finally:
        for name, app in apps.items():
            unregister_local_app(name, app)


def expected_fill_days(calls: dict[str, Any], days: list[str], params: dict[str, Any]) -> list[str]:
    """Return the days a long-only next-open strategy on these calls changes position:
    written apart from the service's mapping (calls by date, then a position walk)."""
    by_day = {t[:10]: i for i, t in enumerate(calls["timestamps"])}
    held, out = 0.0, []
    for t, day in enumerate(days[:-1]):
        i = by_day.get(day)
        if i is None:
            continue
        direction, confidence = calls["direction"][i], calls["confidence"][i]
        want = 1.0 if direction == "up" and confidence >= params["min_confidence"] else 0.0
        if want != held:
            out.append(days[t + 1])
            held = want
    return out


def test_ml_ensemble_is_listed_available_with_its_parameters(platform: Platform) -> None:
    listed = platform.client.get(f"{B}/strategies").json()["strategies"]
    ml = next(s for s in listed if s["name"] == "ml_ensemble")
    assert ml["available"] is True
    assert ml["searchable"] == []
    props = ml["parameters"]["properties"]
    assert {"model", "version", "min_confidence", "on_uncertain", "allow_short"} <= set(props)
    assert ml["defaults"]["training"]["model"] == "walk-forward"


def test_a_backtest_trades_exactly_the_predictors_calls(platform: Platform) -> None:
    c = platform.client
    answer = c.post(f"{B}/backtest", json=RUN)
    assert answer.status_code == 200, answer.text
    run = answer.json()
    # the run stores the version it traded (the active one: none was named)
    assert run["config"]["strategy"]["params"]["version"] == platform.version
    calls = c.post(
        f"{P}/predict_range",
        json={"symbol": "AAPL", "start": RUN["start_date"], "end": RUN["end_date"]},
    ).json()
    assert calls["version"] == platform.version
    fills = c.get(f"{B}/trades/{run['run_id']}", params={"limit": 1000}).json()["trades"]
    days = [
        b["timestamp"][:10]
        for b in c.get(
            "/market/historical/AAPL",
            params={"start": RUN["start_date"], "end": RUN["end_date"]},
        ).json()["bars"]
    ]
    traded = [f["timestamp"][:10] for f in fills if f["reason"] != "end"]
    assert traded == expected_fill_days(calls, days, RUN["strategy"]["params"])
    assert len(traded) >= 4
    assert all(f["direction"] == "buy" for f in fills[::2])  # long-only: in, out, in, ...
    notes = " ".join(run["notes"])
    assert f"default {platform.version}" in notes and "majority class" in notes
    assert "overlaps" not in notes  # the run starts after the version's training data ends


def test_the_same_run_again_gives_the_same_result(platform: Platform) -> None:
    c = platform.client
    first = c.post(f"{B}/backtest", json=RUN).json()
    again = c.post(f"{B}/backtest", json=RUN).json()
    assert again["run_id"] != first["run_id"]
    assert again["metrics"] == first["metrics"]


def test_a_confidence_threshold_and_shorts_change_the_trades(platform: Platform) -> None:
    c = platform.client
    base = c.post(f"{B}/backtest", json=RUN).json()
    strict = {**RUN, "strategy": {"name": "ml_ensemble", "params": {"min_confidence": 0.99}}}
    none = c.post(f"{B}/backtest", json=strict).json()
    assert none["trades"]["fills"] == 0 < base["trades"]["fills"]
    short = {
        **RUN,
        "strategy": {"name": "ml_ensemble", "params": {"min_confidence": 0.0, "allow_short": True}},
    }
    shorted = c.post(f"{B}/backtest", json=short).json()
    fills = c.get(f"{B}/trades/{shorted['run_id']}", params={"limit": 1000}).json()["trades"]
    calls = c.post(
        f"{P}/predict_range",
        json={"symbol": "AAPL", "start": RUN["start_date"], "end": RUN["end_date"]},
    ).json()
    if "down" in calls["direction"]:
        assert shorted["metrics"]["total_return"] != base["metrics"]["total_return"]
        assert any(f["direction"] == "sell" and f["pnl"] is None for f in fills)  # opens a short


def test_a_run_over_the_training_data_says_it_is_in_sample(platform: Platform) -> None:
    body = {**RUN, "start_date": "2019-01-02", "end_date": "2019-12-31"}
    run = platform.client.post(f"{B}/backtest", json=body).json()
    assert any("overlaps the data the model version was trained on" in n for n in run["notes"])


@pytest.mark.parametrize(
    ("path", "change", "field", "status"),
    [
        ("backtest", {"strategy": {"name": "ml_ensemble", "params": {"model": "nope"}}},
         "strategy.params.model", 404),
        ("backtest", {"strategy": {"name": "ml_ensemble", "params": {"version": "9.9.9"}}},
         "strategy.params.version", 404),
        ("backtest", {"data_frequency": "1wk"}, "data_frequency", 422),
        ("backtest", {"strategy": {"name": "ml_ensemble", "params": {"min_confidence": 2}}},
         "strategy.params.min_confidence", 422),
        ("optimize", {"param_grid": {"min_confidence": [0.4, 0.5]}}, "strategy.name", 422),
        ("walk_forward", {"param_grid": {"min_confidence": [0.4, 0.5]}}, "param_grid", 422),
    ],
)  # fmt: skip
def test_bad_ml_requests_are_problems_naming_the_field(
    platform: Platform, path: str, change: dict[str, Any], field: str, status: int
) -> None:
    answer = platform.client.post(f"{B}/{path}", json={**RUN, **change})
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert problem["field"] == field, problem


def test_retrain_every_is_refused_for_a_rule_strategy(platform: Platform) -> None:
    body = {**WF, "strategy": {"name": "sma_crossover"}}
    answer = platform.client.post(f"{B}/walk_forward", json=body)
    assert answer.status_code == 422 and answer.json()["field"] == "retrain_every"


def test_an_ml_walk_forward_trains_per_window_and_scores_out_of_sample(
    platform: Platform,
) -> None:
    c = platform.client
    status = wait_job(c, c.post(f"{B}/walk_forward", json=WF))
    assert status["status"] == "succeeded", status
    assert any("training walk-forward on" in m for m in status["messages"])
    wf = status["result"]
    n = wf["n_windows"]
    assert n == (wf["bars"] - 252 - 84) // 84 + 1 >= 4
    ml = wf["ml"]
    assert len(ml["versions"]) == math.ceil(n / 2) == len(set(ml["versions"]))
    windows = wf["windows"]
    # windows 0, 2, 4, ... train; the window after each trades the same version
    assert [w["ml"]["trained"] for w in windows] == [i % 2 == 0 for i in range(n)]
    assert [w["ml"]["version"] for w in windows] == [ml["versions"][i // 2] for i in range(n)]
    # every version was trained on bars before the test windows that trade it
    info = c.get(f"{P}/model_info", params={"model": "walk-forward"}).json()
    trained_to = {v["version"]: v["end_date"] for v in info["versions"]}
    for w in windows:
        end = trained_to.get(w["ml"]["version"])
        if end is not None:  # kept versions (older ones may be archived)
            assert end <= w["train_end"] < w["test_start"]
    # one window's out-of-sample hit rates are the predictor's own on that range
    w = windows[1]
    calls = c.post(
        f"{P}/predict_range",
        json={
            "symbol": "AAPL",
            "model": "walk-forward",
            "version": w["ml"]["version"],
            "start": w["test_start"],
            "end": w["test_end"],
        },
    ).json()
    assert w["ml"]["realised"] == calls["realised"] > 0
    assert w["ml"]["hit_rate"] == pytest.approx(calls["hit_rate"])
    # the overall rates weight each window by its realised bars
    realised = np.array([w["ml"]["realised"] for w in windows], dtype=float)
    for k in ("model", "majority", "previous"):
        rates = np.array([w["ml"]["hit_rate"][k] for w in windows], dtype=float)
        assert ml["hit_rate"][k] == pytest.approx(float(rates @ realised / realised.sum()))
    assert ml["realised"] == int(realised.sum())
    # one paired test over the pooled bars of all windows, the shared rule's
    test = ml["baseline_test"]
    assert test["n"] == ml["realised"] and test["min_calls"] == 100
    for k in ("majority", "previous"):
        pair = test["baselines"][k]
        assert pair["model_correct"] == round(ml["hit_rate"]["model"] * ml["realised"])
        assert pair["baseline_correct"] == round(ml["hit_rate"][k] * ml["realised"])
        assert pair["model_only"] - pair["baseline_only"] == (
            pair["model_correct"] - pair["baseline_correct"]
        )
    assert ml["beats_baselines"] == (test["verdict"] == "beats")
    expected = {"beats": "beats the naive", "does_not_beat": "does NOT beat"}
    assert expected.get(test["verdict"], "Insufficient evidence") in ml["reading"]
    # a window of under 100 realised calls is never judged on its own
    for w in windows:
        if w["ml"]["realised"] < 100:
            assert w["ml"]["baseline_test"]["verdict"] == "insufficient_evidence"
    # the stitched out-of-sample equity covers the test windows, beside buy-and-hold
    assert wf["equity"]["timestamps"][0][:10] == windows[0]["test_start"]
    assert wf["metrics"]["final_capital"] > 0 and wf["benchmark"]["total_return"] is not None
    # the model the user trades was not touched
    assert c.get(f"{P}/model_info", params={"model": "default"}).json()["active_version"] == (
        platform.version
    )
    # the ML walk-forward is stored like any other: read back by its id, as answered
    stored = c.get(f"{B}/results/{wf['run_id']}").json()
    assert wf["kind"] == "walk_forward" and stored == wf
