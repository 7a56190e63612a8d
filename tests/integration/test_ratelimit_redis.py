"""Rate limits on the real Redis: the seed's counter key, shared by replicas, and the fallback."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis

from shared.http import app_lifespan
from shared.ratelimit import RateLimiter
from tests.integration.conftest import REDIS_URL
from tests.unit.shared.limits_app import create_app, limits_settings
from tests.unit.shared.test_limits import assert_problem
from trading.cli import free_port

pytestmark = pytest.mark.integration


def test_the_counter_lives_in_redis_under_the_seed_key_and_replicas_share_it(
    tmp_path: Path, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = limits_settings(
        tmp_path, redis_url=REDIS_URL, redis_prefix=redis_prefix, rate_limit_per_minute=3
    )
    replicas = [create_app(settings), create_app(settings)]

    async def go() -> list[httpx.Response]:
        answers = []
        async with AsyncExitStack() as stack:
            clients = []
            for app in replicas:
                await stack.enter_async_context(app_lifespan(app))
                transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 999))
                client = httpx.AsyncClient(transport=transport, base_url="http://limits")
                clients.append(await stack.enter_async_context(client))
            for i in range(4):  # alternate replicas: one counter for both
                answers.append(await clients[i % 2].get("/echo/1"))
        return answers

    answers = asyncio.run(go())
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_problem(answers[3], 429, "rate_limited")
    key = f"{redis_prefix}ratelimit:a-10.1.2.3:echo"
    assert redis_client.get(key) == "4"
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= 60
    assert int(answers[3].headers["retry-after"]) <= 60


def test_with_redis_unreachable_the_limits_are_counted_in_process() -> None:
    async def go() -> list[bool]:
        limiter = RateLimiter(
            per_minute=2, redis_url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5
        )
        async with limiter.running():
            return [(await limiter.hit("a-1", "echo")).allowed for _ in range(3)]

    assert asyncio.run(go()) == [True, True, False]
