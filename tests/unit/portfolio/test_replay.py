"""A deployment replayed on the paper broker makes the backtest's fills (acceptance test).

Same config (strategy, symbols, start_date, warm-up, sizing, costs), fills at the next open:
every fill of `POST /backtest` over start_date..until but its closing fill at the end
(`reason` end: a deployment holds) equals the deployment's fill in session, symbol,
direction, shares, price and commission.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

STRATEGIES: list[dict[str, Any]] = [
    {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
    {"name": "mean_reversion", "params": {}},
    {"name": "macd_trend", "params": {}},
    {"name": "sma_crossover", "params": {"fast": 5, "slow": 20, "allow_short": True}},
]
SYMBOLS = ["AAPL", "MSFT", "XOM"]
COSTS = {"commission": 0.005, "commission_rate": 0.001, "min_commission": 1.0, "slippage": 0.002}
START, UNTIL = "2018-01-02", "2019-12-31"


def deploy(platform: TestClient, body: dict[str, Any], cash: float = 100_000.0) -> dict[str, Any]:
    """Open an account and deploy body on it; return the deployment."""
    account = platform.post(
        "/portfolio/accounts", json={"name": "replay", "broker": "paper", "initial_cash": cash}
    )
    assert account.status_code == 201, account.text
    dep = platform.post("/portfolio/deployments", json={"account_id": account.json()["id"], **body})
    assert dep.status_code == 201, dep.text
    return dep.json()  # type: ignore[no-any-return]


def fills(platform: TestClient, account_id: str) -> list[dict[str, Any]]:
    """Return every fill of an account."""
    out: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = platform.get(
            f"/portfolio/accounts/{account_id}/fills", params={"limit": 1000, "offset": offset}
        ).json()
        out += page["fills"]
        offset = page["page"]["next_offset"]
    return out


def backtest_fills(platform: TestClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every fill of POST /backtest of body."""
    run = platform.post("/backtest/backtest", json={**body, "equity_points": 0})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    page = platform.get(f"/backtest/trades/{run_id}", params={"limit": 1000}).json()
    return page["trades"]  # type: ignore[no-any-return]


def key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["timestamp"][:10], f["symbol"], f["direction"], f["shares"])


def assert_same_fills(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """Assert the deployment's fills are the backtest's: session, symbol, direction, shares,
    then price and commission to 1e-12."""
    assert [key(f) for f in ours] == [key(f) for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["price"] == pytest.approx(b["price"], rel=1e-12)
        assert a["commission"] == pytest.approx(b["commission"], rel=1e-12)


@pytest.mark.parametrize(
    "strategy",
    STRATEGIES,
    ids=lambda s: s["name"] + ("_short" if s["params"].get("allow_short") else ""),
)
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_replay_gives_the_backtests_fills(
    platform: TestClient, strategy: dict[str, Any], symbol: str
) -> None:
    dep = deploy(
        platform,
        {"strategy": strategy, "symbols": [symbol], "start_date": START, "costs": COSTS},
    )
    run = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": UNTIL})
    assert run.status_code == 200, run.text
    ours = fills(platform, dep["account_id"])
    theirs = backtest_fills(
        platform,
        {"symbol": symbol, "start_date": START, "end_date": UNTIL, "strategy": strategy, **COSTS},
    )
    closing = [f for f in theirs if f["reason"] == "end"]
    theirs = [f for f in theirs if f["reason"] != "end"]
    assert len(closing) <= 1
    assert len(theirs) >= 2, "too few trades to compare"
    assert_same_fills(ours, theirs)
    # the deployment holds what the backtest closed at its end
    account = platform.get(f"/portfolio/accounts/{dep['account_id']}").json()
    assert len(account["positions"]) == len(closing)


@pytest.mark.parametrize(
    ("position_size", "max_positions"),
    [({"method": "all_in"}, 2), ({"method": "percent_equity", "value": 0.3}, 3)],
    ids=["all_in_2_slots", "percent_equity_3"],
)
def test_a_multi_symbol_replay_gives_the_backtests_fills_per_symbol(
    platform: TestClient, position_size: dict[str, Any], max_positions: int
) -> None:
    strategy = STRATEGIES[0]
    common = {"position_size": position_size, "max_positions": max_positions}
    dep = deploy(
        platform,
        {"strategy": strategy, "symbols": SYMBOLS, "start_date": START, "costs": COSTS, **common},
    )
    run = platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": UNTIL})
    assert run.status_code == 200, run.text
    ours = fills(platform, dep["account_id"])
    theirs = backtest_fills(
        platform,
        {
            "symbols": SYMBOLS,
            "start_date": START,
            "end_date": UNTIL,
            "strategy": strategy,
            **COSTS,
            **common,
        },
    )
    theirs = [f for f in theirs if f["reason"] != "end"]
    for symbol in SYMBOLS:  # the same fills, symbol by symbol, in time order
        mine = [f for f in ours if f["symbol"] == symbol]
        engine = [f for f in theirs if f["symbol"] == symbol]
        assert len(engine) >= 2, f"too few {symbol} trades to compare"
        assert_same_fills(mine, engine)
    assert {f["symbol"] for f in ours} == set(SYMBOLS)
