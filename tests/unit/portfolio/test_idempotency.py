"""A crash between deciding and sending never doubles an order; the restart reconciles.

The portfolio app is stopped right after a session's orders are stored (`crash_after_decide`),
a new app is started on the same database (its start-up reconciliation sends the stored
orders), and the run is repeated: the fills equal those of an uninterrupted deployment.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.portfolio.app import create_app as create_portfolio
from services.portfolio.orders import SimulatedCrashError, client_order_id
from tests.conftest import market_settings
from tests.unit.portfolio.conftest import portfolio_settings
from tests.unit.portfolio.test_replay import deploy, fills
from trading.host import build_platform_app

BODY = {
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
    "symbols": ["AAPL"],
    "start_date": "2018-01-02",
}


def platform_on(base: Path, portfolio_dir: Path) -> TestClient:
    apps = {
        "market": create_market(market_settings(base / "market", SHARED_CSV_DIR)),
        "backtest": create_backtest(
            BacktestSettings(data_dir=base / "backtest", database_url=None, redis_url=None)
        ),
        "portfolio": create_portfolio(portfolio_settings(portfolio_dir)),
    }
    return TestClient(build_platform_app(apps))


def summary(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["timestamp"], f["symbol"], f["direction"], f["shares"], f["price"])


def test_crash_between_decision_and_submission(tmp_path: Path) -> None:
    with platform_on(tmp_path, tmp_path / "p1") as c:
        ref = deploy(c, BODY)
        c.post(f"/portfolio/deployments/{ref['id']}/run", json={"until": "2019-12-31"})
        expected = [summary(f) for f in fills(c, ref["account_id"])]
        dep = deploy(c, BODY)
        # trade up to mid-2018, then crash at the next session with orders
        c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2018-06-29"})
        before = fills(c, dep["account_id"])
        portfolio = next(r.app for r in c.app.routes if getattr(r, "path", "") == "/portfolio")
        portfolio.state.portfolio.orders.crash_after_decide = True
        try:  # the app answers 500 or the exception reaches the client: a crash either way
            crashed = c.post(
                f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"}
            )
            assert crashed.status_code == 500, crashed.text
        except SimulatedCrashError:
            pass
        stored = c.get(f"/portfolio/accounts/{dep['account_id']}/orders?limit=1000").json()
        new = [o for o in stored["orders"] if o["status"] == "new"]
        assert len(new) >= 1  # decided, stored, never sent
        assert fills(c, dep["account_id"]) == before
    # restart on the same database: reconciliation sends the stored orders once
    with platform_on(tmp_path, tmp_path / "p1") as c:
        stored = c.get(f"/portfolio/accounts/{dep['account_id']}/orders?limit=1000").json()
        assert all(o["status"] != "new" for o in stored["orders"])
        assert len(fills(c, dep["account_id"])) == len(before) + len(new)
        run = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
        assert run.status_code == 200, run.text
        got = [summary(f) for f in fills(c, dep["account_id"])]
        ids = [
            o["client_order_id"]
            for o in c.get(f"/portfolio/accounts/{dep['account_id']}/orders?limit=1000").json()[
                "orders"
            ]
        ]
    assert got == expected  # no order doubled, none lost
    assert len(ids) == len(set(ids))
    first = new[0]
    assert first["client_order_id"] == client_order_id(
        uuid.UUID(dep["id"]),
        date.fromisoformat(first["session"]),
        first["symbol"],
        first["side"],
        closing=first["side"] == "sell",  # long-only: a sell closes
    )
