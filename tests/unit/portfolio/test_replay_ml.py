"""A deployment of `ml_ensemble` replays the backtest's fills (the predictor's calls, over HTTP).

Market, predictor, backtest and portfolio co-hosted as `trading serve` hosts them; a small
XGBoost-only model (`TRAIN` of tests/unit/backtest/service/test_ml_api.py) is trained on
AAPL up to mid-2019, then a deployment trading its calls from July 2019 is replayed beside
`POST /backtest` of the same config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.portfolio.app import create_app as create_portfolio
from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.conftest import market_settings
from tests.unit.backtest.service.test_ml_api import TRAIN  # the same small XGBoost model
from tests.unit.portfolio.conftest import portfolio_settings, wait_for_job
from tests.unit.portfolio.test_replay import COSTS, assert_same_fills, backtest_fills, deploy, fills
from trading.host import build_platform_app

STRATEGY = {"name": "ml_ensemble", "params": {"min_confidence": 0.0}}
START, UNTIL = "2019-07-01", "2020-06-30"


@pytest.fixture(scope="module")
def ml_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Market + predictor + backtest on one SQLite file, the portfolio on its own; a model
    trained (version active)."""
    tmp = tmp_path_factory.mktemp("portfolio-ml")
    db = f"sqlite+aiosqlite:///{tmp / 'trading.db'}"
    apps = {
        "market": create_market(market_settings(tmp, SHARED_CSV_DIR, database_url=db)),
        "predictor": create_predictor(
            PredictorSettings(
                data_dir=tmp, database_url=db, redis_url=None, dask_scheduler_address=None
            )
        ),
        "backtest": create_backtest(
            BacktestSettings(data_dir=tmp, database_url=db, redis_url=None)
        ),
        "portfolio": create_portfolio(portfolio_settings(tmp / "portfolio")),
    }
    try:
        with TestClient(build_platform_app(apps)) as client:
            trained = client.post("/predictor/train", json=TRAIN)
            assert trained.status_code == 202, trained.text
            status = wait_for_job(client, trained.headers["location"])
            assert status["status"] == "succeeded", status
            yield client
    finally:
        for name, app in apps.items():
            unregister_local_app(name, app)


@pytest.mark.parametrize("allow_short", [False, True], ids=["long_only", "long_short"])
def test_an_ml_ensemble_replay_gives_the_backtests_fills(
    ml_platform: TestClient, allow_short: bool
) -> None:
    strategy = {"name": "ml_ensemble", "params": {**STRATEGY["params"], "allow_short": allow_short}}
    config = {"strategy": strategy, "start_date": START, "costs": COSTS, "warmup_period": 0}
    dep = deploy(ml_platform, {**config, "symbols": ["AAPL"]})
    run = ml_platform.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": UNTIL})
    assert run.status_code == 200, run.text
    ours = fills(ml_platform, dep["account_id"])
    theirs = backtest_fills(
        ml_platform,
        {
            "symbol": "AAPL",
            "start_date": START,
            "end_date": UNTIL,
            "strategy": strategy,
            "warmup_period": 0,
            **COSTS,
        },
    )
    theirs = [f for f in theirs if f["reason"] != "end"]
    assert len(theirs) >= 2, "too few trades to compare"
    assert_same_fills(ours, theirs)
    stored = ml_platform.get(f"/portfolio/deployments/{dep['id']}").json()
    assert stored["config"]["strategy"]["name"] == "ml_ensemble"


def test_the_deployment_trades_the_predictors_calls(ml_platform: TestClient) -> None:
    """The wishes behind the replay are the predictor's calls (not a copy in the portfolio)."""
    sig = ml_platform.post(
        "/backtest/signals",
        json={
            "symbol": "AAPL",
            "start_date": START,
            "end_date": UNTIL,
            "strategy": STRATEGY,
            "warmup_period": 0,
        },
    )
    assert sig.status_code == 200, sig.text
    body: dict[str, Any] = sig.json()
    assert body["strategy"]["params"].get("version")  # the version it traded is pinned
    wishes = body["series"][0]["wishes"]
    assert {w for w in wishes if w is not None} <= {-1, 0, 1} and any(w == 1 for w in wishes)
