"""The market service on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import asyncpg
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from services.market.app import create_app
from services.market.schemas import HistoricalData, LatestIndicator, PriceQuote
from shared.cache import schema_version
from tests.conftest import market_settings
from tests.integration.conftest import PG_ADMIN_DSN, REDIS_URL

pytestmark = pytest.mark.integration


def pg_count(url: str, sql: str) -> int:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture
def settings(tmp_path: Path, csv_dir: Path, pg_url: str, redis_prefix: str):
    return market_settings(
        tmp_path, csv_dir, database_url=pg_url, redis_url=REDIS_URL, redis_prefix=redis_prefix
    )


def test_rows_land_once_in_postgres(settings, pg_url: str, aapl: pd.DataFrame) -> None:
    params = {"start": "2020-01-02", "end": "2023-10-27"}
    expected = len(aapl.loc["2020-01-02":"2023-10-27"])
    with TestClient(create_app(settings)) as c:
        body = c.get("/historical/AAPL", params=params).json()
        assert len(body["bars"]) == expected
        assert body["metadata"]["cache_level"] == "provider"
    n = pg_count(pg_url, "select count(*) from market_data where symbol='AAPL'")
    assert n == expected
    with TestClient(create_app(settings)) as c:  # fresh L1; Redis still holds the answer
        again = c.get("/historical/AAPL", params=params).json()
        assert again["metadata"]["cache_level"] == "l2"
        assert again["bars"] == body["bars"]
        # a sub-range not cached anywhere comes from PostgreSQL without a vendor fetch
        sub = c.get("/historical/AAPL", params={"start": "2021-01-01", "end": "2021-12-31"})
        assert sub.json()["metadata"]["cache_level"] == "database"
    assert pg_count(pg_url, "select count(*) from market_data where symbol='AAPL'") == n
    assert (
        pg_count(
            pg_url,
            "select count(*) from (select 1 from market_data group by symbol, timestamp "
            "having count(*) > 1) d",
        )
        == 0
    )
    # prices stored as double precision, unchanged
    first = pg_count(
        pg_url,
        "select (open * 1e15)::bigint from market_data where symbol='AAPL' "
        "order by timestamp limit 1",
    )
    assert first == round(float(aapl.loc["2020-01-02", "open"]) * 1e15)


def test_keys_and_ttls_in_redis(settings, redis_prefix: str, redis_client) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/price/AAPL").status_code == 200
        assert c.get("/rsi/AAPL").status_code == 200
        assert (
            c.get(
                "/historical/AAPL", params={"start": "2022-01-01", "end": "2022-12-31"}
            ).status_code
            == 200
        )
    # The seed's names under the prefix, each ending in its answer model's schema version.
    price_key = f"{redis_prefix}market:price:AAPL:v{schema_version(PriceQuote)}"
    assert redis_client.type(price_key) == "hash"
    fields = redis_client.hgetall(price_key)
    assert {"open", "high", "low", "close", "volume", "timestamp"} <= set(fields)
    assert fields["timestamp"].endswith("T00:00:00Z") and float(fields["close"]) > 0
    assert 290 <= redis_client.ttl(price_key) <= 300
    rsi_key = f"{redis_prefix}indicators:AAPL:rsi:v{schema_version(LatestIndicator)}"
    assert 50 <= redis_client.ttl(rsi_key) <= 60
    hist = list(redis_client.scan_iter(match=f"{redis_prefix}market:historical:AAPL:*"))
    assert hist == [
        f"{redis_prefix}market:historical:AAPL:1d:2022-01-01:2022-12-31:0:0"
        f":v{schema_version(HistoricalData)}"
    ]
    assert 86000 <= redis_client.ttl(hist[0]) <= 86400


def test_every_answer_round_trips_through_redis_unchanged(settings) -> None:
    calls = [
        ("/price/KO", {}),
        ("/historical/KO", {"start": "2021-01-01", "end": "2021-12-31", "fill_gaps": True}),
        ("/indicators/KO", {"start": "2021-01-01", "end": "2021-12-31", "indicators": "atr,macd"}),
        ("/macd/KO", {"fast": 5}),
    ]
    with TestClient(create_app(settings)) as c:
        first = [c.get(path, params=params).json() for path, params in calls]
    with TestClient(create_app(settings)) as c:  # a fresh L1: every answer comes from Redis
        again = [c.get(path, params=params).json() for path, params in calls]
    for one, two in zip(first, again, strict=True):
        flags_one, flags_two = one.get("metadata", one), two.get("metadata", two)
        assert flags_one["cached"] is False and flags_one["cache_level"] != "l2"
        assert (flags_two["cached"], flags_two["cache_level"]) == (True, "l2")
        for flags in (flags_one, flags_two):
            del flags["cached"], flags["cache_level"]
        assert one == two  # everything else, every bar and value, as first answered


def test_entries_of_another_answer_shape_are_never_served(
    settings, redis_prefix: str, redis_client
) -> None:
    stale = '{"symbol":"MSFT","price":1.0}'
    # What a deploy with another PriceQuote wrote: the bare seed name, or another version.
    redis_client.hset(f"{redis_prefix}market:price:MSFT", mapping={"__json__": stale})
    redis_client.hset(f"{redis_prefix}market:price:MSFT:v0123456789ab", mapping={"__json__": stale})
    # An entry under today's key that does not fit today's model is dropped, not served.
    current = f"{redis_prefix}market:price:MSFT:v{schema_version(PriceQuote)}"
    redis_client.hset(current, mapping={"__json__": stale})
    redis_client.expire(current, 300)
    with TestClient(create_app(settings)) as c:
        r = c.get("/price/MSFT")
    assert r.status_code == 200, r.text
    assert r.json()["price"] > 1.0 and r.json()["cached"] is False
    assert redis_client.hget(current, "__json__") != stale  # replaced by the fresh answer


def test_killing_redis_connections_degrades_without_errors(
    settings, redis_prefix: str, caplog
) -> None:
    admin = redis.Redis.from_url(REDIS_URL)
    caplog.set_level(logging.WARNING, logger="shared.cache")
    with TestClient(create_app(settings)) as c:
        assert c.get("/price/MSFT").status_code == 200
        admin.client_kill_filter(_type="normal", skipme=True)
        for _ in range(3):
            r = c.get("/price/MSFT")
            assert r.status_code == 200
        assert c.get("/historical/MSFT", params={"start": "2022-01-01"}).status_code == 200
    admin.close()


def test_redis_down_is_logged_once_and_requests_succeed(
    tmp_path: Path, csv_dir: Path, pg_url: str, caplog
) -> None:
    dead = "redis://127.0.0.1:1/0"
    settings = market_settings(tmp_path, csv_dir, database_url=pg_url, redis_url=dead)
    caplog.set_level(logging.WARNING, logger="shared.cache")
    with TestClient(create_app(settings)) as c:
        for symbol in ("AAPL", "MSFT", "KO", "PG", "AAPL"):
            assert c.get(f"/price/{symbol}").status_code == 200
        assert c.get("/historical/KO", params={"start": "2023-01-01"}).status_code == 200
        health = c.get("/health").json()
    assert health["redis"] == "unavailable" and health["database"] == "ok"
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert pg_count(pg_url, "select count(*) from market_data where symbol='KO'") > 0


def test_unreachable_database_is_a_503_problem_not_a_hang(tmp_path: Path, csv_dir: Path) -> None:
    settings = market_settings(
        tmp_path,
        csv_dir,
        database_url="postgresql+asyncpg://postgres:secret@127.0.0.1:1/nothing",
        database_connect_timeout_s=2.0,
    )
    t0 = time.monotonic()
    with TestClient(create_app(settings)) as c:
        r = c.get("/historical/AAPL", params={"start": "2023-01-01"})
        r2 = c.get("/rsi/AAPL")
        price = c.get("/price/MSFT")  # a quote needs no database: the provider answers it
    assert time.monotonic() - t0 < 20
    assert price.status_code == 200 and price.json()["source"] == "csv", price.text
    for resp in (r, r2):
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["code"] == "database_unavailable"
        assert "secret" not in resp.text


def test_failed_request_does_not_touch_stored_rows(settings, pg_url: str) -> None:
    with TestClient(create_app(settings)) as c:
        c.get("/historical/KO", params={"start": "2023-01-01", "end": "2023-06-30"})
        before = pg_count(pg_url, "select count(*) from market_data")
        checksum = "select sum(close * volume)::bigint from market_data"
        total = pg_count(pg_url, checksum)
        assert (
            c.get("/historical/KO", params={"start": "2023-06-30", "end": "2023-01-01"}).status_code
            == 422
        )
        assert c.get("/historical/NOPE1", params={"start": "2023-01-01"}).status_code == 404
        bulk = c.post("/bulk_fetch", json={"symbols": ["NOPE2", "BAD!!"], "kind": "historical"})
        assert bulk.status_code == 200 and bulk.json()["failed"] == 2
    assert pg_count(pg_url, "select count(*) from market_data") == before
    assert pg_count(pg_url, checksum) == total


def test_migrations_are_alembic_managed(settings, pg_url: str) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["database"] == "ok"
    # the market's own chain and the platform's, one version table each; no other service's
    assert pg_count(pg_url, "select count(*) from alembic_version_market") == 1
    assert pg_count(pg_url, "select count(*) from alembic_version_platform") == 1
    tables = pg_count(
        pg_url,
        "select count(*) from information_schema.tables where table_schema='public' and "
        "table_name in ('market_data','market_data_coverage','technical_indicators','jobs')",
    )
    assert tables == 4
    others = pg_count(
        pg_url,
        "select count(*) from information_schema.tables where table_schema='public' and "
        "table_name in ('model_states','backtest_results','alembic_version')",
    )
    assert others == 0
    assert PG_ADMIN_DSN


def test_latest_indicator_values_are_stored_once(settings, pg_url: str) -> None:
    for _ in range(2):  # a fresh app each time, Redis keys dropped: the values are recomputed
        with TestClient(create_app(settings)) as c:
            assert c.get("/macd/AAPL").status_code == 200
            assert c.get("/rsi/AAPL", params={"period": 7}).status_code == 200
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=f"{settings.redis_prefix}indicators:*"):
            r.delete(key)
        r.close()
    rows = pg_count(pg_url, "select count(*) from technical_indicators")
    assert rows == 4  # macd, macd_signal, macd_histogram at 12/26/9; rsi at period 7
    params = pg_count(
        pg_url,
        "select count(distinct parameters::text) from technical_indicators "
        "where indicator_name = 'rsi' and parameters->>'period' = '7'",
    )
    assert params == 1


def test_symbols_and_no_data_on_postgres(settings, pg_url: str, csv_dir: Path) -> None:
    # bars of another vendor stored earlier are listed beside the data files
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    with TestClient(create_app(settings)) as c:
        c.get("/historical/KO", params={"start": "2023-10-02", "end": "2023-10-27"})

        async def add_vendor_bars() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(
                    "insert into market_data (symbol, timestamp, open, high, low, close, "
                    "volume, source, created_at) select 'ZVEND', timestamp, open, high, low, "
                    "close, volume, 'yfinance', created_at from market_data where symbol = 'KO'"
                )
            finally:
                await conn.close()

        asyncio.run(add_vendor_bars())
        listed = c.get("/symbols").json()["symbols"]
        empty = c.get("/historical/KO", params={"start": "2024-01-01", "end": "2024-03-01"})

    rows = {(s["symbol"], s["source"]): s for s in listed}
    assert (rows[("KO", "csv")]["first_bar"], rows[("KO", "csv")]["last_bar"]) == (
        "2003-10-30",
        "2023-10-27",
    )
    assert [k for k in rows if k[0] == "KO"] == [("KO", "csv")]  # the file's whole range, once
    vendor = rows[("ZVEND", "yfinance")]
    assert (vendor["first_bar"], vendor["last_bar"]) == ("2023-10-02", "2023-10-27")
    assert empty.status_code == 404 and empty.json()["code"] == "no_data"
    assert "2003-10-30..2023-10-27" in empty.json()["detail"]
