"""`/optimize`, `/walk_forward` and `/monte_carlo` through the API, checked against the engine
and against the seed's window cutting."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.unit.backtest.service.conftest import GOOG_SMA

SWEEP = {
    **GOOG_SMA,
    "param_grid": {
        "fast": {"start": 5, "stop": 50, "step": 5},
        "slow": {"start": 10, "stop": 200, "step": 10},
    },
    "constraints": ["fast < slow"],
}


def post(api: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST and return the 200 answer's JSON (fail on anything else)."""
    answer = api.post(f"/backtest/{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def seed_create_windows(data: pd.DataFrame, train: int, test: int) -> list[tuple[Any, Any]]:
    """The seed's `WalkForwardAnalysis._create_windows`, verbatim but for `self`."""
    windows = []
    start_idx = 0
    while start_idx + train + test <= len(data):
        train_end = start_idx + train
        test_end = train_end + test
        windows.append((data.iloc[start_idx:train_end], data.iloc[train_end:test_end]))
        start_idx += test
    return windows


# ---- optimisation -----------------------------------------------------------------------


def test_the_grid_ranks_every_combination_and_the_winner_is_the_engines(api: TestClient) -> None:
    result = post(api, "optimize", {**SWEEP, "top_n": 5})
    best = result["best_params"]
    single = post(
        api,
        "backtest",
        {**GOOG_SMA, "strategy": {"name": "sma_crossover", "params": best}},
    )

    pairs = [(f, s) for f in range(5, 51, 5) for s in range(10, 201, 10) if f < s]
    assert result["n_combinations"] == result["n_trials"] == len(pairs)
    assert result["n_invalid"] == 0
    sharpes = [t["metrics"]["sharpe_ratio"] for t in result["top"]]
    assert sharpes == sorted(sharpes, reverse=True) and len(sharpes) == 5
    assert [t["rank"] for t in result["top"]] == [1, 2, 3, 4, 5]
    assert result["top"][0]["params"] == best
    # the sweep kernel and the full engine agree on the winner
    assert result["top"][0]["metrics"]["final_capital"] == pytest.approx(
        single["metrics"]["final_capital"], rel=1e-9
    )
    assert result["top"][0]["metrics"]["total_trades"] == single["metrics"]["total_trades"]
    assert 0 <= result["deflated_sharpe_ratio"] <= 1
    assert 0 <= result["pbo"] <= 1 and result["pbo_splits"] == 10
    # the DSR's inputs: every trial counts, fewer of them are independent
    d = result["deflated_sharpe"]
    assert d["n_trials"] == len(pairs) and 1 <= d["effective_trials"] <= len(pairs)
    assert d["bars"] == result["bars"] and 64 <= d["sampled_trials"] <= 65  # and the winner
    assert d["sharpe_annualized"] == pytest.approx(sharpes[0], rel=1e-9)
    assert d["threshold_sharpe"] > 0 and d["sharpe_variance"] > 0 and d["kurtosis"] > 0
    assert 0 <= d["cross_trial_dsr"] <= 1
    # "likely overfitted" only when the best is within luck AND the selection fails
    overfitted = result["deflated_sharpe_ratio"] < 0.95 and result["pbo"] > 0.5
    assert result["reading"].startswith("Likely overfitted") == overfitted
    assert result["bars"] == single["bars"] and result["bars_hash"] == single["bars_hash"]


def test_constraints_and_the_strategys_own_checks_filter_combinations(api: TestClient) -> None:
    grid = {"fast": [10, 30], "slow": [20, 30]}
    unconstrained = post(api, "optimize", {**GOOG_SMA, "param_grid": grid})
    constrained = post(
        api, "optimize", {**GOOG_SMA, "param_grid": grid, "constraints": ["slow >= 25"]}
    )

    assert unconstrained["n_combinations"] == 4
    assert unconstrained["n_invalid"] == 2  # (30, 20) and (30, 30) fail slow > fast
    assert unconstrained["n_trials"] == 2
    assert constrained["n_combinations"] == 2 and constrained["n_trials"] == 1
    assert constrained["best_params"]["slow"] == 30 and constrained["best_params"]["fast"] == 10


def test_random_search_draws_n_trials_reproducibly(api: TestClient) -> None:
    body = {**SWEEP, "method": "random", "n_trials": 12, "seed": 7, "top_n": 100}
    a = post(api, "optimize", body)
    b = post(api, "optimize", body)
    c = post(api, "optimize", {**body, "seed": 8})

    assert a["n_trials"] == 12 and len(a["top"]) == 12
    assert a["top"] == b["top"]
    assert {tuple(t["params"].items()) for t in a["top"]} != {
        tuple(t["params"].items()) for t in c["top"]
    }
    assert all(t["params"]["fast"] < t["params"]["slow"] for t in a["top"])


def test_any_metric_is_an_objective_in_either_direction(api: TestClient) -> None:
    low = post(
        api,
        "optimize",
        {**SWEEP, "objective": "annualized_volatility", "maximize": False, "top_n": 3},
    )
    vols = [t["metrics"]["annualized_volatility"] for t in low["top"]]
    assert vols == sorted(vols)


def test_other_strategies_are_searched_through_their_targets(api: TestClient) -> None:
    result = post(
        api,
        "optimize",
        {
            **GOOG_SMA,
            "strategy": {"name": "mean_reversion", "params": {}},
            "param_grid": {"bb_period": [10, 20], "oversold": [25, 35]},
        },
    )
    single = post(
        api,
        "backtest",
        {**GOOG_SMA, "strategy": {"name": "mean_reversion", "params": result["best_params"]}},
    )

    assert result["n_trials"] == 4
    assert result["top"][0]["metrics"]["final_capital"] == pytest.approx(
        single["metrics"]["final_capital"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"param_grid": {}}, "param_grid"),
        ({"param_grid": {"fats": [5]}}, "param_grid.fats"),
        ({"param_grid": {"allow_short": [0, 1]}}, "param_grid.allow_short"),
        ({"param_grid": {"fast": [5.5]}}, "param_grid.fast"),
        ({"param_grid": {"fast": {"start": 50, "stop": 5, "step": 5}}}, "param_grid.fast"),
        ({"param_grid": {"fast": [5]}, "constraints": ["fast <"]}, "constraints[0]"),
        ({"param_grid": {"fast": [5]}, "constraints": ["fast < nope"]}, "constraints[0]"),
        ({"param_grid": {"fast": [50], "slow": [20]}}, "param_grid"),
        ({"param_grid": {"fast": [5]}, "constraints": ["fast > 100"]}, "constraints"),
        ({"param_grid": {"fast": [5]}, "symbol": None, "symbols": ["KO", "PG"]}, "symbols"),
        ({"param_grid": {"fast": [5]}, "pbo_splits": 7}, "pbo_splits"),
    ],
)
def test_a_bad_search_is_a_422_naming_the_field(
    api: TestClient, changes: dict[str, Any], field: str
) -> None:
    answer = api.post("/backtest/optimize", json={**GOOG_SMA, **changes})

    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


# ---- walk-forward -----------------------------------------------------------------------


@pytest.mark.parametrize("anchored", [False, True])
def test_windows_are_cut_as_the_seed_cuts_them(api: TestClient, anchored: bool) -> None:
    body = {
        **GOOG_SMA,
        "param_grid": {"fast": [5, 10, 20], "slow": [30, 60]},
        "train_period": 252,
        "test_period": 63,
        "anchored": anchored,
    }
    result = post(api, "walk_forward", body)
    n = result["bars"]
    dates = pd.Index(
        pd.date_range("2000-01-01", periods=n)  # stand-in index: only positions matter
    )
    seed = seed_create_windows(pd.DataFrame(index=dates), 252, 63)
    windows = result["windows"]

    assert result["n_windows"] == len(windows) == len(seed) == (n - 252 - 63) // 63 + 1
    starts = {w["train_start"] for w in windows}
    assert (len(starts) == 1) == anchored
    for a, b in itertools.pairwise(windows):
        assert a["test_end"] < b["test_start"]  # test windows never overlap
        assert b["train_end"] < b["test_start"]
    for w in windows:
        assert w["params"]["fast"] in (5, 10, 20) and w["params"]["slow"] in (30, 60)


def test_the_stitched_equity_chains_the_out_of_sample_windows(api: TestClient) -> None:
    result = post(
        api,
        "walk_forward",
        {**GOOG_SMA, "param_grid": {"fast": [5, 10]}, "train_period": 504, "test_period": 126},
    )
    chained = math.prod(1 + w["out_of_sample"]["total_return"] for w in result["windows"])

    assert result["metrics"]["final_capital"] == pytest.approx(10_000 * chained, rel=1e-9)
    assert result["metrics"]["total_trades"] == sum(
        w["out_of_sample"]["total_trades"] for w in result["windows"]
    )
    assert result["equity"]["total_points"] == 126 * result["n_windows"]
    assert result["equity"]["timestamps"][0] == result["windows"][0]["test_start"]
    assert result["equity"]["timestamps"][-1] == result["windows"][-1]["test_end"]
    ins = np.mean([w["in_sample"]["annualized_return"] for w in result["windows"]])
    assert result["in_sample_annualized_return"] == pytest.approx(ins)
    if ins > 0:
        assert result["walk_forward_efficiency"] == pytest.approx(
            result["out_of_sample_annualized_return"] / ins
        )


def test_without_a_grid_the_given_parameters_are_walked_forward(api: TestClient) -> None:
    result = post(api, "walk_forward", {**GOOG_SMA, "train_period": 252, "test_period": 252})

    assert {w["params"]["fast"] for w in result["windows"]} == {10}
    assert result["objective"] == "sharpe_ratio"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"train_period": 5000}, "train_period"),
        ({"warmup_period": 300, "train_period": 252}, "warmup_period"),
        ({"test_period": 0}, "test_period"),
        ({"param_grid": {"fast": [50], "slow": [20]}}, "param_grid"),
    ],
)
def test_a_bad_walk_forward_is_a_422_naming_the_field(
    api: TestClient, changes: dict[str, Any], field: str
) -> None:
    answer = api.post("/backtest/walk_forward", json={**GOOG_SMA, **changes})

    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


# ---- Monte Carlo ------------------------------------------------------------------------


def test_monte_carlo_of_a_stored_run_is_seeded_and_summarised(api: TestClient) -> None:
    run = post(api, "backtest", GOOG_SMA)
    a = post(api, "monte_carlo", {"run_id": run["run_id"], "n_runs": 500, "seed": 3})
    b = post(api, "monte_carlo", {"run_id": run["run_id"], "n_runs": 500, "seed": 3})
    c = post(api, "monte_carlo", {"run_id": run["run_id"], "n_runs": 500, "seed": 4})

    assert a == b and a != c
    assert a["run_id"] == run["run_id"] and a["n_trades"] == run["metrics"]["total_trades"]
    assert a["actual_total_return"] == pytest.approx(run["metrics"]["total_return"])
    assert a["actual_max_drawdown"] == pytest.approx(run["metrics"]["max_drawdown"])
    assert a["block"] == round(run["bars"] ** (1 / 3))
    for method in ("trade_bootstrap", "block_bootstrap"):
        d = a[method]
        p = d["final_return"]
        assert p["p5"] <= p["p25"] <= p["p50"] <= p["p75"] <= p["p95"]
        assert 0 <= d["probability_of_loss"] <= 1
        assert d["cvar"] >= d["var"]
        assert d["max_drawdown"]["p95"] <= 0
    # resampling the trades in any order compounds to the same product: the median path of a
    # trade bootstrap is near the actual return, never wildly off
    assert a["trade_bootstrap"]["final_return"]["p5"] < a["actual_total_return"]


def test_monte_carlo_of_a_config_runs_and_stores_it_first(api: TestClient) -> None:
    result = post(api, "monte_carlo", {"config": GOOG_SMA, "n_runs": 200})
    stored = api.get(f"/backtest/results/{result['run_id']}")

    assert stored.status_code == 200
    assert stored.json()["metrics"]["total_return"] == pytest.approx(result["actual_total_return"])


def test_a_run_without_trades_has_no_trade_bootstrap(api: TestClient) -> None:
    quiet = post(
        api,
        "backtest",
        {
            **GOOG_SMA,
            "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 20}},
            "warmup_period": 5000,
        },
    )
    result = post(api, "monte_carlo", {"run_id": quiet["run_id"], "n_runs": 50})

    assert quiet["metrics"]["total_trades"] == 0
    assert result["trade_bootstrap"] is None
    assert "no trade" in result["reading"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "run_id"),
        ({"run_id": "00000000-0000-0000-0000-000000000000", "config": GOOG_SMA}, 422, "run_id"),
        ({"run_id": "00000000-0000-0000-0000-000000000000"}, 404, "run_id"),
        ({"config": {**GOOG_SMA, "symbol": "ZZZZ"}}, 404, "config.symbol"),
        ({"config": GOOG_SMA, "n_runs": 0}, 422, "n_runs"),
    ],
)
def test_a_bad_monte_carlo_is_a_problem_naming_the_field(
    api: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    answer = api.post("/backtest/monte_carlo", json=body)

    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
