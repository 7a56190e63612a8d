"""The portfolio on real PostgreSQL: a replay equals the backtest's fills, and a restart
finds the book where it was and processes nothing twice."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.portfolio.app import create_app as create_portfolio
from tests.conftest import market_settings
from tests.unit.portfolio.conftest import portfolio_settings
from tests.unit.portfolio.test_replay import backtest_fills, deploy, fills, key
from trading.host import build_platform_app

STRATEGY = {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}}
COSTS = {"commission": 0.005, "commission_rate": 0.001, "min_commission": 1.0, "slippage": 0.002}


def platform(base: Path, pg_url: str) -> TestClient:
    apps = {
        "market": create_market(market_settings(base / "market", SHARED_CSV_DIR)),
        "backtest": create_backtest(
            BacktestSettings(data_dir=base / "backtest", database_url=None, redis_url=None)
        ),
        "portfolio": create_portfolio(portfolio_settings(base / "p", database_url=pg_url)),
    }
    return TestClient(build_platform_app(apps))


def test_replay_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    body = {"strategy": STRATEGY, "symbols": ["MSFT"], "start_date": "2018-01-02", "costs": COSTS}
    with platform(tmp_path, pg_url) as c:
        dep = deploy(c, body)
        run = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
        assert run.status_code == 200, run.text
        ours = fills(c, dep["account_id"])
        theirs = backtest_fills(
            c,
            {
                "symbol": "MSFT",
                "start_date": "2018-01-02",
                "end_date": "2019-12-31",
                "strategy": STRATEGY,
                **COSTS,
            },
        )
        account = c.get(f"/portfolio/accounts/{dep['account_id']}").json()
    assert [key(f) for f in ours] == [key(f) for f in theirs if f["reason"] != "end"]
    with platform(tmp_path, pg_url) as c:  # a restart reads the same book
        again = c.get(f"/portfolio/accounts/{dep['account_id']}").json()
        rerun = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2019-12-31"})
        assert rerun.json()["sessions"] == 0
        assert len(fills(c, dep["account_id"])) == len(ours)
    assert again["cash"] == account["cash"] and again["positions"] == account["positions"]
