"""Short versions of the load and fault scenarios, on the real PostgreSQL and Redis.

The long ones are in bench/load.py. Requests go in-process through the ASGI app (httpx's
ASGITransport, the app's lifespan entered), many at once on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import event

from services.market.app import create_app
from services.market.settings import MarketSettings
from shared.cache import Cache
from tests.conftest import market_settings
from tests.integration.conftest import REDIS_URL, RedisServer, TcpProxy

pytestmark = pytest.mark.integration

WINDOW = {"start": "2022-01-03", "end": "2022-12-30"}


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Enter the app's lifespan; yield an HTTP client that calls it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://market") as client:
            yield client


def settings_for(tmp_path: Path, csv_dir: Path, **overrides: Any) -> MarketSettings:
    overrides.setdefault("rate_limit_per_minute", 0)  # these tests are about load, not limits
    return market_settings(tmp_path, csv_dir, **overrides)


# ------------------------------------------------------------------------- defect 1: stampede
def test_concurrent_misses_and_an_expiry_cost_one_computation(
    tmp_path: Path, csv_dir: Path, pg_url: str, redis_prefix: str
) -> None:
    settings = settings_for(
        tmp_path,
        csv_dir,
        database_url=pg_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        indicator_ttl_s=1,
    )
    app = create_app(settings)

    async def run() -> dict[str, Any]:
        async with serving(app) as client:
            service = app.state.market
            upserts: list[str] = []
            event.listen(
                service.db.engine.sync_engine,
                "before_cursor_execute",
                lambda _c, _cur, sql, *_: (
                    upserts.append(sql) if sql.startswith("INSERT INTO market_data ") else None
                ),
            )
            cold = await asyncio.gather(
                *(client.get("/indicators/KO", params=WINDOW) for _ in range(200))
            )
            computed = service.cache.flights.started
            await asyncio.sleep(1.2)  # the entry expires (a 1 s TTL)
            started = service.cache.flights.started
            expired = await asyncio.gather(
                *(client.get("/indicators/KO", params=WINDOW) for _ in range(200))
            )
            await service.cache.flights.drain()
            return {
                "cold": cold,
                "expired": expired,
                "computed": computed,
                "refreshes": service.cache.flights.started - started,
                "upserts": len(upserts),
            }

    out = asyncio.run(run())
    assert all(r.status_code == 200 for r in out["cold"] + out["expired"])
    assert out["computed"] == 1  # 200 concurrent misses: one computation
    assert out["upserts"] == 1  # one read of the provider, one write of its bars
    bodies = {r.json()["values"]["rsi"][-1] for r in out["cold"] + out["expired"]}
    assert len(bodies) == 1
    # Across the expiry every caller got the stale entry at once; one refresh ran behind.
    assert {r.json()["cache_level"] for r in out["expired"]} == {"l1"}
    assert out["refreshes"] == 1


# ---------------------------------------------------------------- defect 2: Redis pool busy
def test_more_concurrent_redis_calls_than_connections_is_not_an_outage(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.cache")

    async def run(pool_timeout_s: float) -> Cache:
        cache = Cache(
            redis_url=REDIS_URL,
            prefix=f"{redis_prefix}{uuid.uuid4().hex[:6]}:",
            max_connections=4,
            pool_timeout_s=pool_timeout_s,
        )
        try:
            values = {f"k{i}": {"i": i, "pad": "x" * 2000} for i in range(300)}
            await asyncio.gather(*(cache.set(k, v, 60) for k, v in values.items()))
            cache.l1.clear()
            got = await asyncio.gather(*(cache.get(k) for k in values))
            if pool_timeout_s > 1:  # a patient pool: every call reached Redis
                assert [value for value, _ in got] == list(values.values())
                assert {level for _, level in got} == {"l2"}
            return cache
        finally:
            await cache.aclose()

    patient = asyncio.run(run(5.0))
    hurried = asyncio.run(run(0.0001))  # most calls give up waiting for a connection
    assert patient.busy == 0
    assert hurried.busy > 0  # skipped Redis for those calls ...
    for cache in (patient, hurried):  # ... but never took the busy pool for an outage
        assert cache.breaker.state == "closed" and cache.breaker.opened == 0
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


def test_a_redis_crash_is_logged_once_and_its_restart_once_without_flapping(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.cache")
    ticks = [0.0]

    async def run() -> list[Any]:
        cache = Cache(redis_url=redis_server.url, max_connections=20, clock=lambda: ticks[0])
        try:
            keys = [f"k{i}" for i in range(20)]
            await asyncio.gather(*(cache.set(k, {"v": k}, 600) for k in keys))  # 20 pooled
            redis_server.kill()
            cache.l1.clear()
            down = await asyncio.gather(*(cache.get(k) for k in keys * 3))
            redis_server.start()  # empty again: the entries died with the process
            ticks[0] += Cache.RETRY_AFTER_S  # the next call probes Redis
            await cache.set("probe", {"v": 1}, 600)
            cache.l1.clear()
            again = await asyncio.gather(*(cache.get(k) for k in [*keys, "probe"] * 3))
            return [down, again, cache.breaker.snapshot()]
        finally:
            await cache.aclose()

    down, again, breaker = asyncio.run(run())
    assert {level for _, level in down} == {None}  # misses, answered from nothing, no error
    assert {level for _, level in again} == {None, "l2"}  # the probe entry: from Redis again
    assert breaker["state"] == "closed" and breaker["opened"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.endswith("until it is back") for m in messages) == 1  # "... unavailable ..."
    assert sum(m.endswith(" is back") and "unavailable" not in m for m in messages) == 1


def test_redis_answering_late_right_after_a_success_is_load_but_a_long_silence_is_down(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.cache")
    ticks = [0.0]
    admin = redis.Redis(port=redis_server.port)

    async def run() -> list[Any]:
        cache = Cache(redis_url=redis_server.url, timeout_s=0.2, clock=lambda: ticks[0])
        try:
            await cache.set("k", {"v": 1}, 60)  # a success at t=0
            admin.client_pause(3000)  # Redis stalls: every command waits 3 s
            cache.l1.clear()
            ticks[0] = 1.0  # a second after the success: a stall, not an outage
            stalled = await asyncio.gather(*(cache.get("k") for _ in range(10)))
            state_after_stall = cache.breaker.state
            ticks[0] = 1.0 + Cache.TIMEOUT_GRACE_S  # no success for the grace: silence is down
            silent = await asyncio.gather(*(cache.get("k") for _ in range(10)))
            return [stalled, state_after_stall, silent, cache.breaker.state, cache.slow]
        finally:
            admin.client_unpause()
            admin.close()
            await cache.aclose()

    stalled, state_after_stall, silent, state_after_silence, slow = asyncio.run(run())
    assert {level for _, level in stalled} == {None}  # skipped Redis, no error
    assert state_after_stall == "closed" and slow == 10
    assert {level for _, level in silent} == {None}
    assert state_after_silence == "open"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable (TimeoutError)" in m for m in messages) == 1


# ------------------------------------------------------- defect 3: silent drop to PostgreSQL
def test_a_silent_network_drop_answers_503_within_the_bound_and_recovers(
    tmp_path: Path, csv_dir: Path, pg_url: str, pg_proxy: TcpProxy
) -> None:
    via_proxy = pg_url.replace(
        pg_url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{pg_proxy.port}"
    )
    settings = settings_for(
        tmp_path,
        csv_dir,
        database_url=via_proxy,
        database_connect_timeout_s=1.0,
        database_command_timeout_s=1.0,
        health_timeout_s=1.0,
    )
    bound = settings.database_connect_timeout_s + settings.database_command_timeout_s
    app = create_app(settings)

    async def timed(client: httpx.AsyncClient, path: str, **params: str) -> tuple[int, float]:
        started = time.monotonic()
        response = await client.get(path, params=params)
        return response.status_code, time.monotonic() - started

    async def run() -> dict[str, Any]:
        async with serving(app) as client:
            assert (await client.get("/historical/KO", params=WINDOW)).status_code == 200
            pg_proxy.drop()
            during = await asyncio.gather(  # each needs the database (a window not cached)
                *(
                    timed(client, "/historical/KO", start=f"2021-{m:02d}-01", end="2021-12-31")
                    for m in range(1, 13)
                ),
                timed(client, "/health"),
                timed(client, "/historical/KO", **WINDOW),  # cached: answered from L1
            )
            pg_proxy.restore()
            after = []
            for _ in range(3):  # connections that lived through the drop are replaced
                fresh = await client.get("/historical/KO", params={"start": "2020-01-02"})
                after.append(fresh.status_code)
                if fresh.status_code == 200:
                    break
                await asyncio.sleep(settings.database_connect_timeout_s)
            return {"during": during, "after": after}

    out = asyncio.run(run())
    *needs_db, health, cached = out["during"]
    assert [status for status, _ in needs_db] == [503] * 12
    assert health[0] == 503
    assert cached[0] == 200
    slowest = max(took for _, took in out["during"])
    assert slowest < bound + 1.0, f"a request waited {slowest:.1f} s; the bound is {bound} s"
    assert out["after"][-1] == 200
