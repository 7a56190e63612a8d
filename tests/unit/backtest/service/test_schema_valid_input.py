"""Inputs that once answered 500: each is now a 4xx problem naming its field, or an answer."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

BASE: dict[str, Any] = {
    "symbol": "AAPL",
    "start_date": "2015-01-01",
    "end_date": "2016-12-31",
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 20}},
}


def test_a_range_wider_than_a_float_is_a_problem_naming_it(api: TestClient) -> None:
    body = {**BASE, "param_grid": {"fast": {"start": -1e308, "stop": 1e308, "step": 1}}}
    answer = api.post("/backtest/optimize", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "param_grid.fast"


def test_a_walk_forward_test_window_is_two_bars_at_least(api: TestClient) -> None:
    body = {**BASE, "param_grid": {"fast": [5, 10]}, "train_period": 252}
    answer = api.post("/backtest/walk_forward", json={**body, "test_period": 1})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "test_period"
    answer = api.post("/backtest/walk_forward", json={**body, "test_period": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["n_windows"] == (504 - 252) // 2


def test_a_strategy_filter_is_a_strategy_name(api: TestClient) -> None:
    # PostgreSQL refuses a NUL in text: the filter states what a strategy name is instead
    answer = api.get("/backtest/results", params={"strategy": "sma\x00"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "strategy"
    assert api.get("/backtest/results", params={"strategy": "sma_crossover"}).status_code == 200
