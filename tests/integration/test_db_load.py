"""The database pool is shared fairly (issue 14, section 5): load answers 503
`database_busy` and never opens the circuit breaker that an outage opens."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from sqlalchemy import text

from shared.db import Database
from shared.errors import DatabaseUnavailableError

pytestmark = pytest.mark.integration


async def _sleep(db: Database, seconds: float) -> Any:
    try:
        async with db.session() as session:
            await session.execute(text(f"SELECT pg_sleep({seconds})"))
    except DatabaseUnavailableError as e:
        return e
    return "ok"


def test_statements_late_under_load_are_busy_not_an_outage(pg_url: str) -> None:
    async def go() -> tuple[list[Any], dict[str, object], int]:
        db = Database(pg_url, connect_timeout_s=1.0, command_timeout_s=0.2)
        try:
            async with db.session() as session:  # the database works
                await session.execute(text("SELECT 1"))
            late = await asyncio.gather(*(_sleep(db, 1.0) for _ in range(25)))
            return late, db.breaker.snapshot(), db.slow + db.busy
        finally:
            await db.dispose()

    late, breaker, counted = asyncio.run(go())
    codes = {getattr(e, "code", e) for e in late}
    assert codes == {"database_busy"}
    assert all(getattr(e, "retry_after_s", None) == 1 for e in late)
    assert breaker["state"] == "closed" and breaker["opened"] == 0
    assert counted == 25


def test_a_refused_connection_still_opens_the_breaker() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> tuple[Any, str]:
        db = Database(f"postgresql+asyncpg://x@127.0.0.1:{port}/x", connect_timeout_s=1.0)
        try:
            outcome = await _sleep(db, 0.0)
            return outcome, db.breaker.state
        finally:
            await db.dispose()

    outcome, state = asyncio.run(go())
    assert getattr(outcome, "code", None) == "database_unavailable"
    assert state == "open"


def test_a_health_probe_waiting_for_a_full_pool_is_busy_not_an_outage(pg_url: str) -> None:
    async def go() -> tuple[Any, dict[str, object]]:
        db = Database(pg_url, connect_timeout_s=0.5, command_timeout_s=5.0)
        try:
            held = [asyncio.ensure_future(_sleep(db, 1.5)) for _ in range(20)]  # every connection
            async with asyncio.timeout(30):  # a safety bound, not a speed claim
                while True:
                    if db.pool_full():
                        break
                    await asyncio.sleep(0.01)
            try:
                await db.ping(0.3)
                probed: Any = "ok"
            except DatabaseUnavailableError as e:
                probed = e
            await asyncio.gather(*held)
            return probed, db.breaker.snapshot()
        finally:
            await db.dispose()

    probed, breaker = asyncio.run(go())
    assert getattr(probed, "code", None) == "database_busy"
    assert breaker["state"] == "closed" and breaker["opened"] == 0
