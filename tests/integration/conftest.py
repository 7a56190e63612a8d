"""Real PostgreSQL and Redis: each test gets its own database and Redis key prefix.

Without the servers these tests skip, unless REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import redis

from tests.conftest import REQUIRE_SERVICES

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.integration


def _unavailable(what: str, e: Exception) -> None:
    message = f"{what} is not reachable ({type(e).__name__}: {e})"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and REQUIRE_SERVICES=1")
    pytest.skip(message)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its asyncpg URL; drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        _unavailable("PostgreSQL", e)
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """Yield a unique Redis key prefix; delete every key under it afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        _unavailable("Redis", e)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """Return a plain Redis client for assertions."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, decode_responses=True)
    yield client
    client.close()
