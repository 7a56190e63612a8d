"""The platform's own calls are not a user's: a co-hosted service calling another in-process,
or any caller with the service token, is never rate-limited as the user; a 429 names the
path the client asked for; failed authentications are limited per address."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.backtest.app import create_app as create_backtest
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from shared.http import unregister_local_app
from tests.conftest import market_settings
from tests.unit.backtest.service.conftest import backtest_settings
from tests.unit.shared.limits_app import create_app, limits_settings
from tests.unit.shared.test_limits import assert_problem, run
from trading.host import build_platform_app

HISTORY = {"start": "2020-01-02", "end": "2020-12-31"}
BACKTEST = {
    "symbol": "AAPL",
    "start_date": "2020-01-02",
    "end_date": "2020-12-31",
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
}


def test_a_service_calling_another_in_process_does_not_spend_the_users_limit(
    tmp_path: Path,
) -> None:
    apps = {
        "market": create_market(market_settings(tmp_path, SHARED_CSV_DIR, rate_limit_per_minute=5)),
        "backtest": create_backtest(backtest_settings(tmp_path, rate_limit_per_minute=5)),
    }
    try:
        with TestClient(build_platform_app(apps)) as client:
            for _ in range(5):  # the user spends their whole minute of market history
                assert client.get("/market/historical/AAPL", params=HISTORY).status_code == 200
            refused = client.get("/market/historical/AAPL", params=HISTORY)
            problem = assert_problem(refused, 429, "rate_limited")
            assert problem["instance"] == "/market/historical/AAPL"  # not /market/market/...
            # the backtest reads the same history from the market service in-process
            answer = client.post("/backtest/backtest", json=BACKTEST)
            assert answer.status_code == 200, answer.text
    finally:
        unregister_local_app("market")
        unregister_local_app("backtest")


def test_the_service_token_is_accepted_and_never_rate_limited(tmp_path: Path) -> None:
    settings = limits_settings(
        tmp_path,
        rate_limit_per_minute=2,
        api_token=SecretStr("user-token"),
        service_token=SecretStr("service-token"),
    )
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        service = {"Authorization": "Bearer service-token"}
        assert {(await c.get("/echo/1", headers=service)).status_code for _ in range(6)} == {200}
        user = {"Authorization": "Bearer user-token"}
        assert [(await c.get("/echo/1", headers=user)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]

    run(app, body)


def test_failed_authentications_are_limited_per_address(tmp_path: Path) -> None:
    settings = limits_settings(tmp_path, api_token=SecretStr("right"), auth_failures_per_minute=3)
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        wrong = {"Authorization": "Bearer guess"}
        for _ in range(3):
            assert_problem(await c.get("/echo/1", headers=wrong), 401, "unauthorized")
        refused = await c.get("/echo/1", headers=wrong)
        assert_problem(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # past the limit the address learns nothing, not even from the right token
        right = {"Authorization": "Bearer right"}
        assert (await c.get("/echo/1", headers=right)).status_code == 429
        assert (await c.get("/health")).status_code == 200  # probes are never held up
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 4000)),
            base_url="http://limits",
        )
        async with other:  # another address is not held up
            assert (await other.get("/echo/1", headers=right)).status_code == 200

    run(app, body)
