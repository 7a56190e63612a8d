"""The platform on real PostgreSQL: one migration for many processes, a health check that checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR
from tests.conftest import market_settings
from tests.integration.conftest import TcpProxy
from trading.cli import free_port

pytestmark = pytest.mark.integration


def _start_service(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "services.market.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"service exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("service did not become healthy")


def test_two_services_starting_at_once_migrate_the_schema_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "DATABASE_URL": pg_url,
        "DATA_DIR": str(tmp_path),
        "MARKET_PROVIDERS": "csv",
        "MARKET_DATA_DIR": str(SHARED_CSV_DIR),
        "LOG_LEVEL": "INFO",
    }
    ports = [free_port(), free_port()]
    procs = [_start_service(port, env) for port in ports]  # the same moment, one fresh database
    try:
        for port, proc in zip(ports, procs, strict=True):
            _wait_healthy(port, proc)
        for port in ports:  # both serve real data from the one schema
            quote = httpx.get(f"http://127.0.0.1:{port}/price/KO", timeout=30).json()
            assert quote["symbol"] == "KO"
    finally:
        for proc in procs:
            proc.terminate()
        logs = [proc.communicate(timeout=20)[0].decode() for proc in procs]
    migrated = [log for log in logs if "migrated from empty to" in log]
    at_head = [log for log in logs if "already at schema revision" in log]
    assert len(migrated) == 1, logs
    assert len(at_head) == 1, logs


def test_health_goes_503_when_the_database_drops_and_ok_when_it_returns(
    pg_url: str, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{pg_proxy.port}")
    assert proxied != pg_url
    settings = market_settings(tmp_path, SHARED_CSV_DIR, database_url=proxied, health_timeout_s=1.0)
    with TestClient(create_app(settings)) as client:
        ok = client.get("/health")
        assert ok.status_code == 200 and ok.json()["database"] == "ok"

        pg_proxy.drop()  # packets vanish: no refusal, no reset
        t0 = time.monotonic()
        down = client.get("/health")
        elapsed = time.monotonic() - t0
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable" and down.json()["database"] == "unavailable"
        assert elapsed < 2.0, f"/health took {elapsed:.1f} s with a 1 s timeout"
        metrics = client.get("/metrics").text
        assert 'circuit_breaker_state{breaker="database"} 2.0' in metrics  # open

        pg_proxy.restore()
        deadline = time.monotonic() + 15
        while (back := client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline, back.json()
            time.sleep(0.2)
        assert back.json()["database"] == "ok"
        # the breaker closes on the first real database call after its cool-down
        closed = 'circuit_breaker_state{breaker="database"} 0.0'
        deadline = time.monotonic() + 15
        month = 1
        while closed not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the database breaker never closed"
            window = {"start": f"2012-{month:02d}-01", "end": f"2012-{month:02d}-20"}
            client.get("/historical/KO", params=window)  # a range never asked: the database
            month = month % 12 + 1
            time.sleep(0.5)
        assert client.get("/price/KO").status_code == 200


def test_sslmode_is_passed_to_postgresql(pg_url: str) -> None:
    """This test server has TLS off: `prefer` falls back to plain TCP, `require` must refuse."""
    import asyncio

    from shared.db import Database
    from shared.errors import DatabaseUnavailableError

    async def ping(mode: str) -> None:
        db = Database(pg_url, sslmode=mode)
        try:
            await db.ping(5.0)
        finally:
            await db.dispose()

    asyncio.run(ping("prefer"))
    with pytest.raises(DatabaseUnavailableError):
        asyncio.run(ping("require"))
