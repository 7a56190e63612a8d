"""Accounts, the kill switch, the drawdown halt, refusals shown, VaR/CVaR and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.portfolio.test_replay import deploy, fills

SMA = {"name": "sma_crossover", "params": {"fast": 5, "slow": 20}}


def orders(platform: TestClient, account_id: str) -> list[dict[str, Any]]:
    page = platform.get(f"/portfolio/accounts/{account_id}/orders", params={"limit": 1000})
    assert page.status_code == 200, page.text
    return page.json()["orders"]  # type: ignore[no-any-return]


def test_an_account_starts_as_cash(platform: TestClient) -> None:
    made = platform.post("/portfolio/accounts", json={"name": "a", "initial_cash": 5000})
    assert made.status_code == 201
    got = platform.get(f"/portfolio/accounts/{made.json()['id']}").json()
    assert got["cash"] == got["equity"] == 5000 and got["positions"] == []
    assert got["exposure"] == 0 and got["realised_pnl"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "initial_cash": -1}, "initial_cash"),
        ({"name": "a", "broker": "ib"}, "broker"),
        ({"name": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_accounts_are_422_naming_the_field(
    platform: TestClient, body: dict[str, Any], field: str
) -> None:
    r = platform.post("/portfolio/accounts", json=body)
    assert r.status_code == 422
    problem = r.json()
    assert field in (problem.get("field") or "") or any(
        field in (e.get("field") or "") for e in problem.get("errors") or []
    )


def test_an_alpaca_account_without_keys_says_how_to_store_them(platform: TestClient) -> None:
    r = platform.post("/portfolio/accounts", json={"name": "a", "broker": "alpaca"})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert (problem["code"], problem["field"]) == ("broker_not_configured", "broker")
    assert "trading keys set ALPACA_API_KEY" in problem["detail"]


def test_an_unknown_strategy_is_the_backtests_422(platform: TestClient) -> None:
    account = platform.post("/portfolio/accounts", json={"name": "a"}).json()
    r = platform.post(
        "/portfolio/deployments",
        json={
            "account_id": account["id"],
            "strategy": {"name": "sma_crossover", "params": {"fast": 30, "slow": 10}},
            "symbols": ["AAPL"],
            "start_date": "2019-01-02",
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("strategy")


def test_kill_switch_refuses_every_order_and_shows_why(platform: TestClient) -> None:
    dep = deploy(platform, {"strategy": SMA, "symbols": ["MSFT"], "start_date": "2019-01-02"})
    account = dep["account_id"]
    assert platform.post(f"/portfolio/accounts/{account}/halt").json()["halted"] is True
    run = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    assert run.status_code == 200 and run.json()["refused"] > 0
    listed = orders(platform, account)
    assert listed and all(o["status"] == "refused" for o in listed)
    assert all("kill switch" in o["reason"] for o in listed)
    assert fills(platform, account) == []
    risk = platform.get(f"/portfolio/accounts/{account}/risk").json()
    assert risk["breakers"]["kill_switch"] is True
    assert platform.post(f"/portfolio/accounts/{account}/resume").json()["halted"] is False


def test_drawdown_limit_halts_the_deployment_until_resumed(platform: TestClient) -> None:
    dep = deploy(
        platform,
        {
            "strategy": SMA,
            "symbols": ["BA"],
            "start_date": "2019-01-02",
            "risk": {"max_drawdown": 0.02},
        },
    )
    run = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2020-06-30"})
    assert run.status_code == 200, run.text
    got = platform.get(f"/portfolio/deployments/{dep['id']}").json()
    assert got["halt_reason"] and got["halt_reason"].startswith("max_drawdown")
    refused = [o for o in orders(platform, dep["account_id"]) if o["status"] == "refused"]
    assert refused and all(o["reason"].startswith("max_drawdown") for o in refused)
    risk = platform.get(f"/portfolio/accounts/{dep['account_id']}/risk").json()
    assert dep["id"] in risk["breakers"]["halted_deployments"]
    assert risk["drawdown"] > 0.02
    platform.post(f"/portfolio/accounts/{dep['account_id']}/resume")
    assert platform.get(f"/portfolio/deployments/{dep['id']}").json()["halt_reason"] is None


def test_risk_of_a_held_book(platform: TestClient) -> None:
    dep = deploy(
        platform,
        {
            "strategy": {"name": "buy_and_hold"},
            "symbols": ["AAPL", "MSFT"],
            "start_date": "2018-01-02",
            "max_positions": 2,
            "warmup_period": 0,
        },
    )
    platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    account = platform.get(f"/portfolio/accounts/{dep['account_id']}").json()
    assert {p["symbol"] for p in account["positions"]} == {"AAPL", "MSFT"}
    value = sum(p["market_value"] for p in account["positions"])
    assert account["equity"] == pytest.approx(account["cash"] + value)
    risk = platform.get(f"/portfolio/accounts/{dep['account_id']}/risk").json()
    assert risk["observations"] >= 200
    assert 0 < risk["var_95"] < risk["cvar_95"] < value  # a loss, the tail beyond it
    assert 0.3 < risk["correlation"]["AAPL"]["MSFT"] < 1.0
    assert risk["correlation"]["AAPL"]["AAPL"] == pytest.approx(1.0)
    assert sum(risk["exposure_by_symbol"].values()) == pytest.approx(risk["gross_exposure"])


def test_a_second_run_processes_nothing_new_and_a_stopped_one_refuses(
    platform: TestClient,
) -> None:
    dep = deploy(platform, {"strategy": SMA, "symbols": ["KO"], "start_date": "2019-01-02"})
    first = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-06-28"})
    again = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-06-28"})
    assert first.json()["sessions"] > 100 and again.json()["sessions"] == 0
    assert platform.delete(f"/portfolio/deployments/{dep['id']}").json()["status"] == "stopped"
    stopped = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    assert stopped.status_code == 409


def test_daily_loss_limit_refuses_entries_after_a_gap_down(platform: TestClient) -> None:
    # long/short: every cross closes one side and opens the other at the same open, so an
    # open below the previous close by more than 0.1% refuses the new entry, not the exit
    strategy = {"name": "sma_crossover", "params": {"fast": 5, "slow": 20, "allow_short": True}}
    dep = deploy(
        platform,
        {
            "strategy": strategy,
            "symbols": ["NVDA"],
            "start_date": "2018-01-02",
            "risk": {"daily_loss_limit": 0.001},
        },
    )
    platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
    listed = orders(platform, dep["account_id"])
    refused = [o for o in listed if o["status"] == "refused"]
    assert refused and all(o["reason"].startswith("daily_loss_limit") for o in refused)
    for o in refused:  # the same session's exit went through
        same = [x for x in listed if x["session"] == o["session"] and x["status"] == "filled"]
        assert len(same) == 1  # the close (a long sells, a short buys, to exit)
