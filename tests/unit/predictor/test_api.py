"""The predictor service end to end in-process: real AAPL bars from the co-hosted market
service, embedded SQLite, jobs in a real worker process. XGBoost-only models keep it quick
(the LSTM path runs in the integration and e2e tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR
from services.predictor.app import create_app as predictor_app
from services.predictor.ml.labels import make_labels
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.conftest import market_settings
from trading.host import build_platform_app

P = "/predictor"
TRAIN = {
    "symbols": ["AAPL"],
    "start_date": "2015-01-01",
    "end_date": "2019-12-31",
    "models": ["xgboost"],
    "seed": 7,
}
# AAPL's trading days after the training range: their outcomes are known (realised) at once.
_DATES = pd.read_csv(SHARED_CSV_DIR / "AAPL.csv", usecols=["date"])["date"].str[:10]
DAYS = _DATES[(_DATES >= "2020-02-03") & (_DATES <= "2020-03-31")].tolist()


def wait_job(client: TestClient, answer: Any, limit_s: float = 240.0) -> dict[str, Any]:
    """Follow a 202 job answer to its end; return the final status."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    assert location.startswith(f"{P}/jobs/")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = client.get(location).json()
        if status["status"] in ("succeeded", "failed"):
            return status  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {location} did not end within {limit_s} s")


def train(client: TestClient, **overrides: Any) -> dict[str, Any]:
    """Train a version and return the job's result (failing the test if the job failed)."""
    status = wait_job(client, client.post(f"{P}/train", json={**TRAIN, **overrides}))
    assert status["status"] == "succeeded", status
    return status["result"]  # type: ignore[no-any-return]


@dataclass
class Platform:
    client: TestClient
    v1: dict[str, Any]
    predictor: Any


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, csv_dir: Path) -> Iterator[Platform]:
    """Run market + predictor in one app on one SQLite file and train version 1.0.0."""
    tmp = tmp_path_factory.mktemp("predictor-api")
    db = f"sqlite+aiosqlite:///{tmp / 'trading.db'}"
    market = market_app(market_settings(tmp, csv_dir, database_url=db))
    predictor = predictor_app(
        PredictorSettings(
            data_dir=tmp,
            database_url=db,
            redis_url=None,
            keep_versions=2,
            online_update_after=10,
            online_tolerance=1.0,
            outcomes_check_s=0,  # the tests look at the outcomes themselves
            job_progress_interval_s=0.05,
            dask_scheduler_address=None,
        )
    )
    apps = {"market": market, "predictor": predictor}
    try:
        with TestClient(build_platform_app(apps)) as client:
            yield Platform(client, train(client), predictor)
    finally:
        unregister_local_app("market", market)
        unregister_local_app("predictor", predictor)


def wait_loaded(predictor: Any, name: str) -> list[str]:
    """Poll the registry until `name` (model@version) is held in memory; return what is held."""
    registry = predictor.state.predictor.registry
    deadline = time.monotonic() + 120
    while name not in registry.loaded() and time.monotonic() < deadline:
        time.sleep(0.05)
    return registry.loaded()  # type: ignore[no-any-return]


def test_an_active_version_is_in_memory_before_its_first_predict(platform: Platform) -> None:
    """Training loads the version it made active, and a fresh process loads the active one
    at start: the first /predict never pays for reading, unpacking and importing."""
    made = train(platform.client, model="preloaded")
    assert made["active"] is True
    assert f"preloaded@{made['version']}" in wait_loaded(
        platform.predictor, f"preloaded@{made['version']}"
    )
    kept = train(platform.client, model="preloaded", activate=False)
    time.sleep(0.5)  # a version left inactive is not loaded (nothing is scheduled for it)
    assert (
        f"preloaded@{kept['version']}" not in platform.predictor.state.predictor.registry.loaded()
    )

    settings = platform.predictor.state.predictor.settings
    fresh = predictor_app(settings.model_copy(update={"outcomes_check_s": 0}))
    try:
        with TestClient(fresh):
            active = platform.v1["version"]
            assert f"default@{active}" in wait_loaded(fresh, f"default@{active}")
            assert not any(
                n.startswith("preloaded@") for n in fresh.state.predictor.registry.loaded()
            )
    finally:
        unregister_local_app("predictor", fresh)


def predict(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post(f"{P}/predict", json={"symbol": "AAPL", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def clear_prediction_cache(platform: Platform) -> None:
    """Forget cached predictions (L1; there is no Redis here) so answers are recomputed."""
    platform.predictor.state.predictor.cache.l1.clear()


def test_training_stores_version_one_with_honest_out_of_sample_figures(
    platform: Platform,
) -> None:
    v1 = platform.v1
    assert v1["version"] == "1.0.0" and v1["active"] and v1["previous_version"] is None
    assert v1["models"] == ["xgboost"] and v1["symbols"] == ["AAPL"]
    assert v1["start_date"] == "2015-01-02" and v1["end_date"] == "2019-12-31"
    assert v1["rows"]["train"] > v1["rows"]["validation"] > 0 and v1["rows"]["test"] > 0
    for segment in ("validation", "test"):
        figures = v1[segment]
        assert set(figures["members"]) == {"xgboost"}
        assert set(figures["baselines"]) == {"majority", "previous"}
        test = figures["baseline_tests"]["ensemble"]
        assert test["n"] == figures["rows"]
        assert figures["beats_baselines"]["ensemble"] == (test["verdict"] == "beats")
        assert figures["climatology"]["brier"] > 0 and figures["climatology"]["log_loss"] > 0
    # the verdict is the test segment's paired test, with its counts in the prose
    test = v1["baseline_test"]
    assert test == v1["test"]["baseline_tests"]["ensemble"]
    assert v1["beats_baselines"] == (test["verdict"] == "beats")
    for pair in test["baselines"].values():
        assert f"b={pair['model_only']}" in v1["verdict"]
        assert f"c={pair['baseline_only']}" in v1["verdict"]
    assert "McNemar" in v1["verdict"] and "climatology" in v1["verdict"]
    assert f"on {v1['test']['ensemble']['sharpe_calls']} non-neutral calls" in v1["verdict"]


def test_a_prediction_has_the_call_its_members_and_the_verdict(platform: Platform) -> None:
    body = predict(platform.client, as_of="2020-03-07")  # a Saturday: Friday's bar
    assert body["as_of"].startswith("2020-03-06")
    assert body["version"] == "1.0.0" and body["model"] == "default" and body["horizon"] == 1
    probs = body["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0)
    assert body["direction"] == max(probs, key=probs.get)
    assert body["confidence"] == max(probs.values())
    assert set(body["members"]) == {"xgboost"}
    assert body["members"]["xgboost"]["weight"] == 1.0
    assert body["members"]["xgboost"]["probabilities"] == probs  # one member: its own call
    assert body["beats_baselines"] == platform.v1["beats_baselines"]
    assert body["verdict"] == platform.v1["verdict"]
    assert body["baseline_test"] == platform.v1["baseline_test"]
    # 2020-03-06 is after the 2015-2019 training range, on the symbol trained on
    assert body["trained_on_symbol"] and not body["in_sample"] and body["notes"] == []
    assert body["cached"] is False
    again = predict(platform.client, as_of="2020-03-07")
    assert again["cached"] is True
    assert {**again, "cached": False} == body


def test_a_call_in_sample_or_on_another_symbol_says_so(platform: Platform) -> None:
    inside = predict(platform.client, as_of="2017-06-01")  # inside the training range
    assert inside["in_sample"] is True and inside["trained_on_symbol"] is True
    assert any("in-sample call, not a forecast" in n for n in inside["notes"])
    other = predict(platform.client, symbol="MSFT", as_of="2020-03-06")
    assert other["trained_on_symbol"] is False and other["in_sample"] is False
    assert any("was not trained on MSFT" in n for n in other["notes"])


def test_predict_without_as_of_uses_the_latest_bar(platform: Platform, aapl: pd.DataFrame) -> None:
    body = predict(platform.client)
    assert body["as_of"][:10] == aapl.index[-1]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"symbol": "AAPL", "model": "nope"}, 404, "model_not_found", "model"),
        ({"symbol": "ZZZZ"}, 404, "symbol_not_found", "symbol"),
        ({"symbol": "AA PL"}, 422, "validation_error", "symbol"),
        ({"symbol": "AAPL", "as_of": "2004-01-15"}, 409, "insufficient_data", "as_of"),
        ({"symbol": "AAPL", "as_of": "2100-01-01"}, 422, "validation_error", "as_of"),
        ({"symbol": "AAPL", "as_of": 20200102}, 422, "validation_error", "as_of"),
        ({"symbol": "AAPL", "as_of": "yesterday"}, 422, "validation_error", "as_of"),
        ({"symbol": "AAPL", "horizon": 3}, 422, "validation_error", "horizon"),
    ],
)
def test_bad_predictions_are_problems_naming_the_field(
    platform: Platform, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    answer = platform.client.post(f"{P}/predict", json=body)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (problem["code"], problem["field"]) == (code, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"models": ["xgboost", "xgboost"]}, "models"),
        ({"models": ["forest"]}, "models[0]"),
        ({"symbols": []}, "symbols"),
        ({"horizon": 0}, "horizon"),
        ({"lstm": {"epochs": 0}}, "lstm.epochs"),
        ({"model": "../etc"}, "model"),
        ({"start_date": "2019-12-31", "end_date": "2019-01-01"}, "end_date"),
        ({"start_date": 1577836800}, "start_date"),
        ({"lstm": {"epochs": True}}, "lstm.epochs"),
        ({"horizon": "2"}, "horizon"),
    ],
)
def test_bad_training_requests_are_refused_before_any_job(
    platform: Platform, body: dict[str, Any], field: str
) -> None:
    answer = platform.client.post(f"{P}/train", json={**TRAIN, **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


def test_a_training_job_on_too_few_bars_fails_with_insufficient_data(platform: Platform) -> None:
    status = wait_job(
        platform.client,
        platform.client.post(
            f"{P}/train", json={**TRAIN, "model": "short", "start_date": "2019-10-01"}
        ),
    )
    assert status["status"] == "failed"
    error = status["error"]
    assert (error["code"], error["field"]) == ("insufficient_data", "start_date")


def test_a_cancelled_training_stores_no_version(platform: Platform) -> None:
    client = platform.client
    answer = client.post(f"{P}/train", json={**TRAIN, "model": "cancelled"})
    assert answer.status_code == 202, answer.text
    cancelled = client.delete(answer.headers["location"])
    assert cancelled.status_code == 200, cancelled.text
    status = wait_job(client, answer)
    assert status["status"] == "failed" and status["error"]["code"] == "cancelled"
    assert client.get(f"{P}/model_info", params={"model": "cancelled"}).status_code == 404


def test_rollback_gives_back_the_older_versions_exact_predictions(platform: Platform) -> None:
    client = platform.client
    clear_prediction_cache(platform)
    days = DAYS[:5]
    before = [predict(client, as_of=d) for d in days]
    assert all(b["version"] == "1.0.0" for b in before)

    v2 = train(client, seed=8, start_date="2016-01-01")
    assert (v2["version"], v2["previous_version"]) == ("1.1.0", "1.0.0")
    newer = predict(client, as_of=days[0])
    assert newer["version"] == "1.1.0" and not newer["cached"]

    rolled = client.post(f"{P}/rollback", json={"model": "default", "version": "1.0.0"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["previous_version"] == "1.1.0" and rolled.json()["changed"]
    # nothing cached from 1.1.0 is served: the same request answers 1.0.0 (its own entry)
    first = predict(client, as_of=days[0])
    assert first["version"] == "1.0.0"
    assert {**first, "cached": False} == before[0]
    clear_prediction_cache(platform)
    after = [predict(client, as_of=d) for d in days]
    assert all(not a["cached"] for a in after)
    assert after == before  # every probability bit for bit

    again = client.post(f"{P}/rollback", json={"model": "default", "version": "1.0.0"}).json()
    assert again["changed"] is False


def test_a_range_of_calls_equals_the_calls_one_by_one(
    platform: Platform, aapl: pd.DataFrame
) -> None:
    client = platform.client
    version = client.get(f"{P}/model_info").json()["active_version"]
    body = {"symbol": "AAPL", "version": version, "start": DAYS[0], "end": DAYS[7]}
    answer = client.post(f"{P}/predict_range", json=body)
    assert answer.status_code == 200, answer.text
    series = answer.json()
    assert [t[:10] for t in series["timestamps"]] == DAYS[:8] and series["skipped"] == 0
    assert series["version"] == version and series["horizon"] == 1
    for i, day in enumerate(DAYS[:8]):
        one = predict(client, as_of=day, version=version)
        assert series["direction"][i] == one["direction"]
        for cls, p in one["probabilities"].items():
            # features of another window: equal to the full history's to ~1e-12
            assert series["probabilities"][cls][i] == pytest.approx(p, rel=1e-9, abs=1e-12)
    labels = make_labels(aapl["close"].to_numpy(np.float64), horizon=1, band=0.5, vol_window=21)
    index = {day: i for i, day in enumerate(aapl.index)}
    truth = [["down", "neutral", "up"][int(labels[index[d]])] for d in DAYS[:7]]
    assert series["outcome"] == [*truth, None]  # the last bar's next bar is past `end`
    assert series["realised"] == 7 == series["out_of_sample_realised"]
    assert series["in_sample"] == [False] * 8
    assert series["baseline_calls"]["previous"][:7] == [
        ["down", "neutral", "up"][int(labels[index[d] - 1])] for d in DAYS[:7]
    ]
    assert series["range_test"]["verdict"] == "insufficient_evidence"  # 7 < 100 calls
    assert series["range_test"]["n"] == 7 and "fewer than the 100" in series["range_verdict"]
    hits = [series["direction"][i] == truth[i] for i in range(7)]
    assert series["hit_rate"]["model"] == pytest.approx(sum(hits) / 7)
    previous = [["down", "neutral", "up"][int(labels[index[d] - 1])] for d in DAYS[:7]]
    prev_hits = sum(p == t for p, t in zip(previous, truth, strict=True))
    assert series["hit_rate"]["previous"] == pytest.approx(prev_hits / 7)
    early = client.post(
        f"{P}/predict_range", json={"symbol": "AAPL", "start": "2003-10-01", "end": "2004-03-31"}
    ).json()
    assert early["skipped"] > 0 and len(early["timestamps"]) < early["skipped"] + 120
    reversed_ = client.post(
        f"{P}/predict_range", json={"symbol": "AAPL", "start": DAYS[5], "end": DAYS[0]}
    )
    assert reversed_.status_code == 422 and reversed_.json()["field"] == "end"


def test_a_kept_older_version_can_be_asked_while_another_is_active(platform: Platform) -> None:
    client = platform.client
    if len(client.get(f"{P}/model_info").json()["versions"]) < 2:
        train(client, seed=11)  # this test ran alone
    info = client.get(f"{P}/model_info").json()
    kept = [v["version"] for v in info["versions"]]
    other = next(v for v in kept if v != info["active_version"])
    call = predict(client, as_of=DAYS[2], version=other)
    assert call["version"] == other
    assert predict(client, as_of=DAYS[2])["version"] == info["active_version"]
    for version in info["archived_versions"] or ["9.9.9"]:
        missing = client.post(
            f"{P}/predict", json={"symbol": "AAPL", "as_of": DAYS[2], "version": version}
        )
        assert missing.status_code == 404 and missing.json()["code"] == "version_not_found"


def test_old_versions_are_archived_beyond_the_kept_ones(platform: Platform) -> None:
    client = platform.client
    info = client.get(f"{P}/model_info").json()
    if info["active_version"] != "1.0.0":  # the rollback test ran first in this module
        client.post(f"{P}/rollback", json={"version": "1.0.0"})
    v3 = train(client, seed=9, start_date="2017-01-01")
    assert v3["version"] == "1.2.0"
    info = client.get(f"{P}/model_info", params={"model": "default"}).json()
    assert info["active_version"] == "1.2.0" and info["keep_versions"] == 2
    assert [v["version"] for v in info["versions"]] == ["1.2.0", "1.1.0"]
    assert info["archived_versions"] == ["1.0.0"]
    newest = info["versions"][0]
    assert newest["active"] and newest["kind"] == "trained" and newest["seed"] == 9
    assert newest["hyperparameters"]["xgboost"]["n_estimators"] == 100
    assert newest["symbols"] == ["AAPL"] and newest["start_date"] == "2017-01-03"
    gone = client.post(f"{P}/rollback", json={"version": "1.0.0"})
    assert gone.status_code == 404 and gone.json()["code"] == "version_not_found"
    assert "archived" in gone.json()["detail"]
    missing = client.post(f"{P}/rollback", json={"version": "7.0.0"})
    assert missing.status_code == 404 and missing.json()["field"] == "version"


def test_performance_scores_realised_predictions_against_the_bars(
    platform: Platform, aapl: pd.DataFrame
) -> None:
    client = platform.client
    version = client.get(f"{P}/model_info").json()["active_version"]
    calls = [predict(client, as_of=d) for d in DAYS[:12]]
    predict(client, as_of=DAYS[0])  # a cache hit: one more call, the same prediction
    perf = client.get(f"{P}/performance", params={"version": version}).json()
    assert perf["version"] == version and perf["horizon"] == 1
    assert perf["predictions"] == perf["realised"] == 12 and perf["pending"] == 0
    assert perf["calls"] >= 13
    # the outcome of each call, recomputed here from the CSV with the training's labels
    close = aapl["close"].to_numpy(np.float64)
    labels = make_labels(close, horizon=1, band=0.5, vol_window=21)
    index = {day: i for i, day in enumerate(aapl.index)}
    truth = [int(labels[index[c["as_of"][:10]]]) for c in calls]
    called = [["down", "neutral", "up"].index(c["direction"]) for c in calls]
    accuracy = float(np.mean(np.asarray(truth) == np.asarray(called)))
    assert perf["ensemble"]["accuracy"] == pytest.approx(accuracy)
    assert set(perf["baselines"]) == {"majority", "previous"}
    # 12 realised out-of-sample calls: whatever the accuracies, no verdict
    assert perf["out_of_sample"] == 12 and perf["in_sample"] is None
    assert perf["baseline_test"]["verdict"] == "insufficient_evidence"
    assert perf["beats_baselines"] is False and "Insufficient evidence" in perf["verdict"]
    assert perf["climatology"]["rows"] == 12
    assert perf["latency"]["calls"] == perf["calls"]
    assert 0 < perf["latency"]["p50_ms"] <= perf["latency"]["p99_ms"]
    # calls on bars inside the training range are reported apart, never judged
    for day in ("2017-06-01", "2017-06-02", "2017-06-05"):
        predict(client, as_of=day)
    perf = client.get(f"{P}/performance", params={"version": version}).json()
    assert perf["realised"] == 15 and perf["out_of_sample"] == 12
    assert perf["in_sample"]["rows"] == 3 and perf["ensemble"]["rows"] == 12
    assert perf["in_sample_warning"].startswith("In sample") and "in_sample" in perf["verdict"]
    assert perf["in_sample_last"][:10] <= "2019-12-31" and perf["baseline_test"]["n"] == 12
    unknown = client.get(f"{P}/performance", params={"model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "model_not_found"


def test_an_online_update_waits_for_new_outcomes_then_makes_a_patch_version(
    platform: Platform,
) -> None:
    client = platform.client
    for day in DAYS[:30]:
        predict(client, as_of=day)
    base = client.get(f"{P}/model_info").json()["active_version"]
    answer = client.post(f"{P}/update_online", json={"model": "default", "trees": 5})
    status = wait_job(client, answer)
    assert status["status"] == "succeeded", status
    result = status["result"]
    major, minor, _ = base.split(".")
    assert result["status"] == "accepted"  # PREDICTOR_ONLINE_TOLERANCE=1.0 here
    assert result["new_version"] == f"{major}.{minor}.1" == result["active_version"]
    assert result["samples"]["buffer"] >= 20 and result["samples"]["new"] >= 10
    assert result["samples"]["train"] > 0 and result["samples"]["validation"] >= 5
    assert "not more than 100% worse" in result["reason"]
    info = client.get(f"{P}/model_info").json()
    newest = info["versions"][0]
    assert (newest["version"], newest["kind"], newest["parent_version"]) == (
        result["new_version"],
        "online_update",
        base,
    )
    weights = client.get(f"{P}/weights").json()
    assert weights["version"] == result["new_version"]
    assert set(weights["sharpes"]) == {"xgboost"} and weights["weights"] == {"xgboost": 1.0}
    # the parent was reweighted from its realised out-of-sample outcomes first (>= 30 of them)
    parent = next(v for v in info["versions"] if v["version"] == base)
    assert parent["weights"] == {"xgboost": 1.0}
    # the outcomes are no longer new: the next call has nothing to do
    again = client.post(f"{P}/update_online", json={})
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "not_due" and again.json()["samples"]["new"] == 0


def test_the_online_update_starts_by_itself_once_enough_outcomes_are_new(
    platform: Platform,
) -> None:
    from services.predictor import adapt

    client = platform.client
    service, runner = platform.predictor.state.predictor, platform.predictor.state.jobs
    info = client.get(f"{P}/model_info").json()
    base = info["active_version"]
    assert info["adaptation"]["automatic_update"] is False  # outcomes_check_s=0 here
    assert info["adaptation"]["update_after"] == 10 and info["adaptation"]["tolerance"] == 1.0
    check = client.portal.call(adapt.on_outcomes, service, runner, "default")
    assert check.job_id is None and check.update.startswith("not due")
    later = _DATES[(_DATES >= "2020-04-15") & (_DATES <= "2020-05-29")].tolist()
    for day in later:  # after the update's outcomes: new to it
        predict(client, as_of=day)
    check = client.portal.call(adapt.on_outcomes, service, runner, "default")
    assert check.job_id is not None and "started automatic online update" in check.update
    status = client.get(f"{P}/jobs/{check.job_id}").json()
    deadline = time.monotonic() + 240
    while status["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.get(f"{P}/jobs/{check.job_id}").json()
    assert status["status"] == "succeeded", status
    assert status["kind"] == "update_online" and status["result"]["status"] == "accepted"
    major, minor, patch = base.split(".")
    assert status["result"]["new_version"] == f"{major}.{minor}.{int(patch) + 1}"
    info = client.get(f"{P}/model_info").json()
    assert info["active_version"] == status["result"]["new_version"]
    assert info["adaptation"]["last_check"]["job_id"] == check.job_id
    # the weights' history is the lineage's: the parents were reweighted from their outcomes
    weights = client.get(f"{P}/weights").json()
    assert weights["min_outcomes"] == 30 and weights["window"] == 250
    history = weights["history"]
    assert history and all(h["outcomes"] >= 30 for h in history)
    assert [h["last_bar"] for h in history] == sorted(h["last_bar"] for h in history)


def test_health_says_what_is_loaded(platform: Platform) -> None:
    body = platform.client.get(f"{P}/health").json()
    assert body["status"] == "ok" and body["redis"] == "disabled"
    assert any(name.startswith("default@") for name in body["loaded_models"])
    assert isinstance(body["tensorflow_loaded"], bool)  # a fresh process: test_api_imports
