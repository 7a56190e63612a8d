"""The backtest service on real PostgreSQL and Redis, its bars from a market service over HTTP
(MARKET_URL, as when deployed apart): runs, fills, charts and job results outlive the
service; migration 0003 round-trips with data in place."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.backtest.app import create_app
from services.backtest.settings import BacktestSettings
from services.backtest.tables import SCHEMA as BACKTEST
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from shared.db import Database
from shared.migrate import alembic_config
from tests.conftest import market_settings
from tests.unit.backtest.service.conftest import fills_stored_both_ways
from trading.cli import free_port, serve_in_thread

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {
    "symbols": ["MSFT", "KO"],
    "start_date": "2012-01-01",
    "end_date": "2022-12-31",
    "initial_capital": 50_000,
    "strategy": {"name": "macd_trend", "params": {"allow_short": True}},
    "commission": 0.005,
    "slippage": 0.0005,
    "max_positions": 2,
    "stop_loss": 0.1,
}


@pytest.fixture
def market_url(pg_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[str]:
    """Serve a market service on the test database over HTTP; yield its URL."""
    settings = market_settings(
        tmp_path,
        SHARED_CSV_DIR,
        database_url=pg_url,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=redis_prefix + "market:",
    )
    with serve_in_thread(create_market(settings), free_port()) as url:
        yield url


def backtest(pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path) -> TestClient:
    """Return a client of a fresh backtest app on the test database, Redis and market."""
    settings = BacktestSettings(
        data_dir=tmp_path,
        database_url=pg_url,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=redis_prefix,
        market_url=market_url,
        backtest_sync_max_trial_bars=0,  # the search below runs as a job
    )
    return TestClient(create_app(settings))


def wait_done(client: TestClient, url: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(url).json()
        if status["status"] in ("succeeded", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{url} did not end")


def test_runs_trades_charts_and_jobs_survive_a_restart(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as first:
        run = first.post("/backtest", json=CONFIG)
        assert run.status_code == 200, run.text
        body = run.json()
        fills = first.get(f"/trades/{body['run_id']}", params={"limit": 1000}).json()
        png = first.get(f"/results/{body['run_id']}/chart.png").content
        search = first.post(
            "/optimize",
            json={
                **CONFIG,
                "symbols": None,
                "symbol": "MSFT",
                "param_grid": {"fast": [8, 12], "slow": [26, 40]},
            },
        )
        assert search.status_code == 202, search.text
        job = wait_done(first, search.headers["location"])
        health = first.get("/health").json()
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as second:
        again = second.get(f"/results/{body['run_id']}").json()
        fills_again = second.get(f"/trades/{body['run_id']}", params={"limit": 1000}).json()
        png_again = second.get(f"/results/{body['run_id']}/chart.png").content
        job_again = second.get(search.headers["location"]).json()
        listed = second.get("/results", params={"symbol": "KO"}).json()
        mc = second.post("/monte_carlo", json={"run_id": body["run_id"], "n_runs": 200})

    assert health == {"status": "ok", "database": "ok", "redis": "ok"}
    assert body["symbols"] == ["MSFT", "KO"] and body["metrics"]["total_trades"] > 0
    assert again == body
    assert fills_again == fills and fills["page"]["total"] == body["trades"]["fills"]
    assert {f["reason"] for f in fills["trades"]} >= {"signal"}
    assert png_again == png and png[:4] == b"\x89PNG"
    assert job["status"] == "succeeded" and job_again == job
    assert job["result"]["n_trials"] == 4
    assert [r["run_id"] for r in listed["results"]] == [body["run_id"]]
    assert mc.status_code == 200 and mc.json()["n_trades"] == body["metrics"]["total_trades"]
    keys = redis.Redis.from_url("redis://127.0.0.1:6379/0").keys(f"{redis_prefix}backtest:*")
    assert any(b":chart:" in k for k in keys)  # charts are cached in Redis for every replica


def test_migration_backtest_0002_round_trips_with_runs_in_place(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as client:
        body = client.post("/backtest", json=CONFIG).json()

    async def move(target: str, down: bool) -> tuple[int, set[str]]:
        db = Database(pg_url)
        try:
            async with db.engine.begin() as conn:

                def go(c: Any) -> None:
                    cfg = alembic_config(BACKTEST, c)
                    (command.downgrade if down else command.upgrade)(cfg, target)

                await conn.run_sync(go)
                trades = await conn.scalar(
                    text("SELECT count(*) FROM backtest_trades WHERE run_id = :r"),
                    {"r": uuid.UUID(body["run_id"])},
                )
                cols = await conn.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'backtest_results'"
                    )
                )
                return int(trades or 0), {r[0] for r in cols}
        finally:
            await db.dispose()

    down_trades, down_cols = asyncio.run(move("backtest_0001", True))
    up_trades, up_cols = asyncio.run(move("head", False))

    assert down_trades == up_trades == body["trades"]["fills"]
    assert "bars_hash" not in down_cols and "symbol" in down_cols
    assert {"bars_hash", "symbols", "series"} <= up_cols


def test_bulk_inserted_fills_read_back_as_sqlalchemy_stores_them_on_postgresql(
    pg_url: str,
) -> None:
    plain, bulk = asyncio.run(fills_stored_both_ways(pg_url))
    assert len(plain) > 50
    assert bulk == plain


def test_a_run_deleted_by_one_replica_is_gone_from_another_that_cached_it(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    with (
        backtest(pg_url, redis_prefix, market_url, tmp_path) as one,
        backtest(pg_url, redis_prefix, market_url, tmp_path) as other,
    ):
        body = one.post("/backtest", json=CONFIG).json()
        result = f"/results/{body['run_id']}"
        # the other replica holds the answer and the chart in its own memory (L1)
        assert other.get(result).json() == body
        assert other.get(f"{result}/chart.png").status_code == 200
        assert one.delete(result).status_code == 204
        gone = [other.get(u).status_code for u in (result, f"{result}/chart.png")]
        fills = other.get(f"/trades/{body['run_id']}")
        listed = other.get("/results", params={"symbol": "KO"}).json()

    assert gone == [404, 404] and fills.status_code == 404
    assert listed["results"] == []


def test_walk_forwards_and_searches_are_stored_listed_and_survive_a_restart(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    single = {**CONFIG, "symbols": None, "symbol": "MSFT"}
    walk = {**single, "param_grid": {"fast": [8, 12]}, "train_period": 504, "test_period": 252}
    search = {**single, "param_grid": {"fast": [8, 12], "slow": [26, 40]}}
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as first:
        run = first.post("/backtest", json=single).json()
        walked = first.post("/walk_forward", json=walk)
        assert walked.status_code == 202, walked.text  # a job: its client may leave
        walk_job = wait_done(first, walked.headers["location"])
        searched = first.post("/optimize", json=search)
        search_job = wait_done(first, searched.headers["location"])
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as second:
        wf = walk_job["result"]
        opt = search_job["result"]
        wf_again = second.get(f"/results/{wf['run_id']}").json()
        opt_again = second.get(f"/results/{opt['run_id']}").json()
        listed = second.get("/results").json()
        only_wf = second.get("/results", params={"kind": "walk_forward"}).json()
        chart = second.get(f"/results/{wf['run_id']}/chart.png")
        mc = second.post("/monte_carlo", json={"run_id": wf["run_id"], "n_runs": 200})

    assert walk_job["status"] == search_job["status"] == "succeeded"
    assert wf_again == wf and opt_again == opt
    assert [(r["run_id"], r["kind"]) for r in listed["results"]] == [
        (opt["run_id"], "optimization"),
        (wf["run_id"], "walk_forward"),
        (run["run_id"], "backtest"),
    ]
    assert listed["page"]["total"] == 3
    assert [r["run_id"] for r in only_wf["results"]] == [wf["run_id"]]
    assert listed["results"][1]["final_capital"] == wf["metrics"]["final_capital"]
    assert chart.status_code == 200 and chart.content[:4] == b"\x89PNG"
    assert mc.status_code == 200, mc.text
    assert mc.json()["actual_total_return"] == pytest.approx(wf["metrics"]["total_return"])


def test_migration_backtest_0003_round_trips_with_analyses_in_place(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as client:
        run = client.post("/backtest", json=CONFIG).json()

    async def move(target: str, down: bool) -> tuple[set[str], int]:
        db = Database(pg_url)
        try:
            async with db.engine.begin() as conn:

                def go(c: Any) -> None:
                    cfg = alembic_config(BACKTEST, c)
                    (command.downgrade if down else command.upgrade)(cfg, target)

                await conn.run_sync(go)
                tables = await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                runs = await conn.scalar(text("SELECT count(*) FROM backtest_results"))
                return {r[0] for r in tables}, int(runs or 0)
        finally:
            await db.dispose()

    down_tables, down_runs = asyncio.run(move("backtest_0002", True))
    up_tables, up_runs = asyncio.run(move("head", False))

    assert "analysis_runs" not in down_tables and "analysis_runs" in up_tables
    assert down_runs == up_runs == 1 and run["run_id"]


def test_saved_strategies_version_and_retire_on_postgresql(
    pg_url: str, redis_prefix: str, market_url: str, tmp_path: Path
) -> None:
    rules = {
        "rules": {
            "entry_long": "rsi(close, $n) < 35 and close > sma(close, 100)",
            "exit_long": "rsi(close, $n) > 65",
        },
        "params": {"n": {"default": 14, "min": 2, "max": 50}},
    }
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as client:
        versions = [
            client.post("/strategies", json={"name": "pg_rsi", **rules}).json()["version"]
            for _ in range(2)
        ]
        run = client.post(
            "/backtest",
            json={**CONFIG, "strategy": {"name": "pg_rsi", "version": 1, "params": {"n": 10}}},
        ).json()
    # a new app on the same database: the strategies and the run's text outlive the service
    with backtest(pg_url, redis_prefix, market_url, tmp_path) as client:
        listed = {s["name"]: s for s in client.get("/strategies").json()["strategies"]}
        stored = client.get(f"/results/{run['run_id']}").json()
        retired = client.delete("/strategies/pg_rsi").json()
        after = client.get("/strategies/pg_rsi")
    assert versions == [1, 2]
    assert listed["pg_rsi"]["version"] == 2
    assert stored["config"]["strategy"]["version"] == 1
    traded = stored["config"]["strategy"]["rules"]
    assert {k: v for k, v in traded.items() if v} == rules["rules"]
    assert retired["retired_versions"] == 2 and after.status_code == 404
