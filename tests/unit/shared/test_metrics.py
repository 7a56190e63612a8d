"""`/metrics` in Prometheus text format: requests by operation, cache, providers, breakers, jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from shared.breaker import CircuitBreaker
from shared.cache import Cache, ModelCache
from shared.jobs.store import Owner, insert_job
from shared.metrics import provider_call, publish_breaker, set_breaker_state
from tests.unit.shared.limits_app import create_app, limits_settings
from tests.unit.shared.test_limits import run

REPO = Path(__file__).resolve().parents[3]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)
    n: int


def test_requests_are_timed_by_operation_id_and_counted_by_status(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path))

    async def body(c: httpx.AsyncClient) -> str:
        before = (await c.get("/metrics")).text
        assert (await c.get("/echo/1")).status_code == 200
        assert (await c.get("/echo/x")).status_code == 422
        assert (await c.get("/no/such/path")).status_code == 404
        answer = await c.get("/metrics")
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert answer.headers["server-timing"].startswith("app;dur=")
        return before + "\n#SPLIT\n" + answer.text

    before, after = run(app, body).split("\n#SPLIT\n")
    labels = {"service": "limits", "operation": "echo"}
    count = "http_request_duration_seconds_count"
    assert (value(after, count, **labels) or 0) - (value(before, count, **labels) or 0) == 2
    for status in ("200", "422"):
        total = "http_requests_total"
        delta = (value(after, total, **labels, status=status) or 0) - (
            value(before, total, **labels, status=status) or 0
        )
        assert delta == 1, status
    # An unknown path is counted under one label, never under its own path.
    assert value(
        after, "http_requests_total", service="limits", operation="unmatched", status="404"
    )
    assert "/no/such/path" not in after


def test_cache_lookups_by_level_and_the_hit_ratio(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path))

    async def body(c: httpx.AsyncClient) -> tuple[str, str]:
        before = (await c.get("/metrics")).text
        answers = ModelCache(Cache(redis_url=None), Answer)
        assert (await answers.get("k")) == (None, None)  # an L1 miss (no L2 configured)
        await answers.set("k", Answer(n=1), 60)
        assert (await answers.get("k"))[1] == "l1"
        assert (await answers.get("k"))[1] == "l1"
        return before, (await c.get("/metrics")).text

    before, after = run(app, body)

    def delta(result: str) -> float:
        name = "cache_lookups_total"
        return (value(after, name, level="l1", result=result) or 0) - (
            value(before, name, level="l1", result=result) or 0
        )

    assert (delta("hit"), delta("miss")) == (2, 1)
    hits = value(after, "cache_lookups_total", level="l1", result="hit") or 0
    misses = value(after, "cache_lookups_total", level="l1", result="miss") or 0
    assert value(after, "cache_hit_ratio", level="l1") == pytest.approx(hits / (hits + misses))


def test_provider_calls_breaker_state_jobs_and_pool_use(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path))
    provider = f"vendor{uuid.uuid4().hex[:6]}"

    async def body(c: httpx.AsyncClient) -> str:
        with provider_call(provider):
            pass
        with pytest.raises(ConnectionError), provider_call(provider):
            raise ConnectionError("vendor down")
        set_breaker_state(provider, "open")
        now = datetime.now(UTC)
        owner = Owner(host="h", pid=1, instance="i")
        async with app.state.db.session() as session:
            for _ in range(2):
                await insert_job(
                    session,
                    job_id=uuid.uuid4(),
                    kind="sweep",
                    service="limits",
                    request={},
                    owner=owner,
                    now=now,
                )
            await session.commit()
        return (await c.get("/metrics")).text

    text = run(app, body)
    assert value(text, "provider_calls_total", provider=provider, outcome="ok") == 1
    assert value(text, "provider_calls_total", provider=provider, outcome="error") == 1
    assert value(text, "provider_call_duration_seconds_count", provider=provider) == 2
    assert value(text, "circuit_breaker_state", breaker=provider) == 2
    assert value(text, "jobs", service="limits", status="queued") == 2
    assert value(text, "db_pool_connections", service="limits", state="checked_out") is not None
    assert (value(text, "db_pool_connections", service="limits", state="overflow") or 0) >= 0


def test_workers_share_one_exposition_in_multiprocess_mode(tmp_path: Path) -> None:
    """Counters written by two processes add up in a third one's scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    count = "from shared.metrics import observe_cache; observe_cache('l1', True)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    scrape = "import sys; from shared.metrics import render; sys.stdout.write(render().decode())"
    text = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    assert value(text, "cache_lookups_total", level="l1", result="hit") == 2
    assert value(text, "cache_hit_ratio", level="l1") == 1.0


def test_a_scrape_survives_a_database_that_is_down(tmp_path: Path) -> None:
    from trading.cli import free_port

    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    app = create_app(limits_settings(tmp_path, database_url=url, health_timeout_s=0.5))

    async def body(c: httpx.AsyncClient) -> tuple[int, int, str]:
        health = await c.get("/health")
        metrics = await c.get("/metrics")
        return health.status_code, metrics.status_code, metrics.text

    health, status, text = run(app, body)
    assert health == 503 and status == 200
    assert "http_request_duration_seconds" in text


def test_a_circuit_breaker_publishes_its_state(tmp_path: Path) -> None:
    name = f"dep{uuid.uuid4().hex[:6]}"
    now = [0.0]
    breaker = CircuitBreaker(
        name, failure_threshold=1, cooldown_s=10, clock=lambda: now[0], on_change=publish_breaker
    )
    app = create_app(limits_settings(tmp_path))

    async def scrape(c: httpx.AsyncClient) -> str:
        return (await c.get("/metrics")).text

    permit = breaker.allow()
    assert permit is not None
    breaker.failure(permit)
    assert breaker.state == "open"
    assert value(run(app, scrape), "circuit_breaker_state", breaker=name) == 2


def test_the_market_counts_its_provider_calls_and_publishes_its_breakers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.market.app import create_app as create_market_app
    from services.market.settings import SHARED_CSV_DIR
    from tests.conftest import market_settings

    app = create_market_app(market_settings(tmp_path, SHARED_CSV_DIR))
    with TestClient(app) as client:
        before = client.get("/metrics").text
        assert client.get("/price/MSFT").status_code == 200  # read from the CSV provider
        assert client.get("/price/ZZZZQ").status_code == 404  # the provider answered: unknown
        after = client.get("/metrics").text

    def delta(outcome: str) -> float:
        name = "provider_calls_total"
        return (value(after, name, provider="csv", outcome=outcome) or 0) - (
            value(before, name, provider="csv", outcome=outcome) or 0
        )

    assert delta("ok") >= 2 and delta("error") == 0
    assert value(after, "circuit_breaker_state", breaker="provider csv") == 0
