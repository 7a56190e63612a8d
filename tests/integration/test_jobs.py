"""Jobs live in the database: they survive a restart, and a killed process's job is marked.

Each test runs on SQLite and on real PostgreSQL (a fresh database per test).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from shared.db import Database
from shared.jobs import JobStatus, store
from shared.migrate import alembic_config, drift
from shared.tables import PLATFORM
from tests.unit.shared.job_app import SERVICE, create_app, job_settings
from tests.unit.shared.test_jobs_routes import wait_done
from trading.cli import free_port
from trading.discovery import service_schemas

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a fresh database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_a_job_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, database_url=database_url)
    with TestClient(create_app(settings)) as first:
        started = first.post("/simulations", json={"paths": 5})
        before = wait_done(first, started.headers["location"])
    with TestClient(create_app(settings)) as second:  # a new app: nothing kept in memory
        after = second.get(started.headers["location"])

    assert before["status"] == "succeeded" and len(before["result"]["paths"]) == 5
    assert after.status_code == 200
    assert after.json() == before


@pytest.fixture
def service_process(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run the test job service with uvicorn in a subprocess on database_url."""
    port = free_port()
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path),
        JOB_PROGRESS_INTERVAL_S="0.02",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "service.log"
    factory = "tests.unit.shared.job_app:create_app"
    args = ["--factory", factory, "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"service exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def _stored(database_url: str, job_id: uuid.UUID) -> JobStatus | None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return await store.load_job(session, job_id=job_id, service=SERVICE)
    finally:
        await db.dispose()


def test_a_job_of_a_killed_process_is_marked_interrupted_on_the_next_start(
    service_process: tuple[subprocess.Popen[bytes], str], database_url: str, tmp_path: Path
) -> None:
    proc, base = service_process
    with httpx.Client(base_url=base, timeout=10) as http:
        started = http.post("/spins", json={"limit_s": 120})
        location = started.headers["location"]
        deadline = time.monotonic() + 60
        while True:
            status: dict[str, Any] = http.get(location).json()
            if status["status"] == "running" and status["progress"]["done"] > 0:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
    job_id = uuid.UUID(started.json()["id"])
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown code runs: nothing marks the job
    proc.wait(timeout=10)
    left = asyncio.run(_stored(database_url, job_id))

    with TestClient(create_app(job_settings(tmp_path, database_url=database_url))) as again:
        after = again.get(location).json()

    assert left is not None and left.status == "running"  # the kill left it running
    assert after["status"] == "failed"
    assert after["error"]["code"] == "interrupted"
    assert "its process is gone" in after["error"]["detail"]
    assert str(proc.pid) not in after["error"]["detail"]  # no pid or host in an answer
    assert after["result"] is None and after["finished_at"] is not None


def test_every_chain_matches_its_tables_and_the_jobs_chain_round_trips(pg_url: str) -> None:
    async def go() -> tuple[list[Any], set[str], set[str]]:
        db = Database(pg_url)
        await db.migrate(*service_schemas())
        try:
            async with db.engine.begin() as conn:

                def move(c: Any, target: str, down: bool) -> set[str]:
                    cfg = alembic_config(PLATFORM, c)
                    (command.downgrade if down else command.upgrade)(cfg, target)
                    return set(inspect(c).get_table_names())

                # the platform's tables and every service's, each on its own metadata
                diffs = await conn.run_sync(drift, [PLATFORM, *service_schemas()])
                below = await conn.run_sync(move, "base", True)
                again = await conn.run_sync(move, "head", False)
        finally:
            await db.dispose()
        return diffs, below, again

    diffs, below, again = asyncio.run(go())
    assert diffs == []
    assert "jobs" not in below and "market_data" in below and "portfolio_orders" in below
    assert "jobs" in again
