"""The strategy registry over HTTP (embedded SQLite): validate, save immutable versions, list
built-in and saved strategies from one registry, retire; a saved name or inline rules
wherever a strategy is accepted, the run storing the exact text and version it traded."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.backtest.config import BUILTIN_MODELS
from services.backtest.strategies import STRATEGIES
from tests.unit.backtest.service.conftest import GOOG_SMA

RSI = {
    "rules": {
        "entry_long": "rsi(close, $n) < 35 and close > sma(close, 100)",
        "exit_long": "rsi(close, $n) > 65",
    },
    "params": {"n": {"default": 14, "min": 2, "max": 50}},
}
SMA_RULES = {
    "rules": {
        "entry_long": "crosses_above(sma(close, $fast), sma(close, $slow))",
        "exit_long": "crosses_below(sma(close, $fast), sma(close, $slow))",
    },
    "params": {
        "fast": {"default": 10, "min": 2, "max": 100},
        "slow": {"default": 30, "min": 5, "max": 300},
    },
}


def test_validate_answers_normal_rules_params_and_warmup(api: TestClient) -> None:
    body = {"rules": {"entry_long": "rsi( close,$n )<35 and close>sma(close,100)"}}
    body["params"] = RSI["params"]  # type: ignore[assignment]
    answer = api.post("/backtest/strategies/validate", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["rules"] == {"entry_long": "rsi(close, $n) < 35 and close > sma(close, 100)"}
    assert got["params"] == [{"name": "n", "default": 14, "min": 2, "max": 50, "integer": True}]
    assert got["warmup_bars"] == 99
    assert got["short"] is False


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (
            {"rules": {"entry_long": "rsl(close, 14) < 30"}},
            "rules.entry_long",
            "entry_long 1:1: unknown function `rsl`; did you mean `rsi`?",
        ),
        (
            {"rules": {"entry_long": "close > lag(close, -2)"}},
            "rules.entry_long",
            "`lag` needs n >= 0 (no look into the future)",
        ),
        (
            {"rules": {"entry_long": "sma(close, $fast) > close"}},
            "rules.entry_long",
            "`$fast` is used but not declared in params",
        ),
        ({"rules": {"exit_long": "close > 1"}}, "rules", "no entry rule"),
    ],
)
def test_a_bad_rule_is_a_422_naming_rule_and_position(
    api: TestClient, body: dict[str, Any], field: str, detail: str
) -> None:
    answer = api.post("/backtest/strategies/validate", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == field
    assert detail in problem["detail"]


def test_unknown_fields_are_rejected(api: TestClient) -> None:
    answer = api.post(
        "/backtest/strategies/validate", json={**RSI, "rules": {**RSI["rules"], "entry": "x"}}
    )
    assert answer.status_code == 422


def test_saved_versions_are_immutable_and_listed_with_the_builtins(api: TestClient) -> None:
    first = api.post("/backtest/strategies", json={"name": "rsi_trend", **RSI})
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    changed = {**RSI, "params": {"n": {"default": 10, "min": 2, "max": 50}}}
    second = api.post("/backtest/strategies", json={"name": "rsi_trend", **changed})
    assert second.json()["version"] == 2
    assert api.get("/backtest/strategies/rsi_trend").json()["defaults"] == {"n": 10}
    v1 = api.get("/backtest/strategies/rsi_trend", params={"version": 1}).json()
    assert v1["defaults"] == {"n": 14} and v1["kind"] == "saved"

    listed = {s["name"]: s for s in api.get("/backtest/strategies").json()["strategies"]}
    # one registry: every built-in the request schema accepts is listed, and nothing else
    assert set(BUILTIN_MODELS) == set(STRATEGIES)
    assert set(STRATEGIES) <= set(listed)
    assert listed["rsi_trend"]["version"] == 2
    assert listed["rsi_trend"]["searchable"] == ["n"]
    assert listed["rsi_trend"]["rules"]["exit_long"] == "rsi(close, $n) > 65"

    taken = api.post("/backtest/strategies", json={"name": "sma_crossover", **RSI})
    assert taken.status_code == 409


def test_a_run_by_saved_name_stores_the_text_and_version(api: TestClient) -> None:
    api.post("/backtest/strategies", json={"name": "goog_rsi", **RSI})
    body = {**GOOG_SMA, "strategy": {"name": "goog_rsi", "params": {"n": 10}}}
    answer = api.post("/backtest/backtest", json=body)
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["strategy"] == "goog_rsi"
    traded = run["config"]["strategy"]
    assert traded["version"] == 1
    assert traded["rules"]["entry_long"] == "rsi(close, $n) < 35 and close > sma(close, 100)"
    assert traded["params"]["n"]["default"] == 10
    assert run["metrics"]["total_trades"] > 0
    stored = api.get(f"/backtest/results/{run['run_id']}").json()
    assert stored["config"]["strategy"] == traded
    # the stored config reproduces the run
    again = api.post("/backtest/backtest", json={**body, "strategy": traded}).json()
    assert again["metrics"] == run["metrics"]

    unknown = api.post("/backtest/backtest", json={**GOOG_SMA, "strategy": {"name": "goog_rsl"}})
    assert unknown.status_code == 422
    assert "did you mean `goog_rsi`?" in unknown.json()["detail"]
    bad = api.post(
        "/backtest/backtest",
        json={**GOOG_SMA, "strategy": {"name": "goog_rsi", "params": {"m": 3}}},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "strategy.params.m"


def test_inline_rules_backtest_and_bad_rules_name_the_request_field(api: TestClient) -> None:
    answer = api.post("/backtest/backtest", json={**GOOG_SMA, "strategy": SMA_RULES})
    assert answer.status_code == 200, answer.text
    assert answer.json()["strategy"] == "expression"
    bad = {**SMA_RULES, "rules": {"entry_long": "crosses_above(sma(close, $fast), sma(close))"}}
    problem = api.post("/backtest/backtest", json={**GOOG_SMA, "strategy": bad}).json()
    assert problem["status"] == 422
    assert problem["field"] == "strategy.rules.entry_long"
    assert "`sma` takes 2 arguments" in problem["detail"]


def test_optimize_sweeps_a_param_of_a_saved_strategy(api: TestClient) -> None:
    api.post("/backtest/strategies", json={"name": "sma_rules", **SMA_RULES})
    body = {
        **GOOG_SMA,
        "strategy": {"name": "sma_rules"},
        "param_grid": {"fast": [5, 10, 20], "slow": {"start": 30, "stop": 60, "step": 10}},
        "constraints": ["fast < slow"],
    }
    answer = api.post("/backtest/optimize", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["strategy"] == "sma_rules"
    assert got["n_trials"] == 12
    assert set(got["best_params"]) == {"fast", "slow"}
    # the winner's metrics are a backtest of the same rules at those values
    best = got["best_params"]
    params = {k: {**v, "default": best[k]} for k, v in SMA_RULES["params"].items()}
    run = api.post(
        "/backtest/backtest",
        json={**GOOG_SMA, "strategy": {**SMA_RULES, "params": params}},
    ).json()
    assert got["top"][0]["metrics"]["total_trades"] == run["metrics"]["total_trades"]
    assert got["top"][0]["metrics"]["final_capital"] == pytest.approx(
        run["metrics"]["final_capital"], rel=1e-9
    )
    wrong = api.post("/backtest/optimize", json={**body, "param_grid": {"fsat": [5]}})
    assert wrong.status_code == 422 and wrong.json()["field"] == "param_grid.fsat"


def test_retired_strategies_are_not_listed_or_accepted(api: TestClient) -> None:
    api.post("/backtest/strategies", json={"name": "short_lived", **RSI})
    gone = api.delete("/backtest/strategies/short_lived")
    assert gone.status_code == 200 and gone.json()["retired_versions"] == 1
    names = [s["name"] for s in api.get("/backtest/strategies").json()["strategies"]]
    assert "short_lived" not in names
    assert api.get("/backtest/strategies/short_lived").status_code == 404
    run = api.post("/backtest/backtest", json={**GOOG_SMA, "strategy": {"name": "short_lived"}})
    assert run.status_code == 422
    assert api.delete("/backtest/strategies/short_lived").status_code == 404


def test_language_lists_every_function(api: TestClient) -> None:
    got = api.get("/backtest/strategies/language").json()
    names = {f["name"] for f in got["functions"]}
    assert {"sma", "rsi", "crosses_above", "lag", "highest", "macd_signal"} <= names
    assert set(got["rules"]) == {"entry_long", "exit_long", "entry_short", "exit_short"}
    for example in got["examples"]:
        check = api.post(
            "/backtest/strategies/validate",
            json={"rules": example["rules"], "params": example["params"]},
        )
        assert check.status_code == 200, check.text


def test_walk_forward_and_monte_carlo_take_language_strategies(api: TestClient) -> None:
    api.post("/backtest/strategies", json={"name": "wf_sma", **SMA_RULES})
    walk = api.post(
        "/backtest/walk_forward",
        json={
            **GOOG_SMA,
            "strategy": {"name": "wf_sma"},
            "param_grid": {"fast": [5, 10], "slow": [30, 60]},
            "train_period": 504,
            "test_period": 252,
        },
    )
    assert walk.status_code == 200, walk.text
    got = walk.json()
    assert got["strategy"] == "wf_sma" and got["n_windows"] >= 3
    assert all(set(w["params"]) >= {"fast", "slow"} for w in got["windows"])
    mc = api.post(
        "/backtest/monte_carlo",
        json={"config": {**GOOG_SMA, "strategy": {"name": "wf_sma"}}, "n_runs": 200},
    )
    assert mc.status_code == 200, mc.text
    bad = api.post(
        "/backtest/monte_carlo",
        json={"config": {**GOOG_SMA, "strategy": {"rules": {"entry_long": "rsl(close, 3) < 3"}}}},
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "config.strategy.rules.entry_long"
