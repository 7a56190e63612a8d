"""shared/: settings, logging masks, the L1 cache, the service client, problem details."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.market.service import _missing_ranges
from services.market.settings import MarketSettings
from shared.api import install_bearer_auth, install_error_handlers
from shared.cache import Cache, LRUCache
from shared.errors import NotFoundError, ServiceUnavailableError
from shared.http import ServiceClient, UpstreamProblemError
from shared.logging import SecretMaskingFilter, mask_secrets
from trading.cli import free_port, serve_in_thread


@pytest.mark.parametrize(
    "raw,secret",
    [
        ("postgresql+asyncpg://trader:hunter2@db:5432/trading", "hunter2"),
        ("redis://:s3cr3t@cache:6379/0", "s3cr3t"),
        ("GET /x?api_key=ABCDEF123&symbol=AAPL", "ABCDEF123"),
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
        ("token=tok_live_999 sent", "tok_live_999"),
        ('{"password": "pa55word"}', "pa55word"),
    ],
)
def test_secrets_are_masked(raw: str, secret: str) -> None:
    masked = mask_secrets(raw)
    assert secret not in masked
    assert "***" in masked


def test_log_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.mask")
    caplog.handler.addFilter(SecretMaskingFilter())
    with caplog.at_level(logging.INFO, logger="test.mask"):
        logger.info("connecting to %s", "postgresql://u:topsecret@h/db")
    assert "topsecret" not in caplog.text and "u:***@h" in caplog.text


def test_defaults_need_nothing_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABASE_URL", "REDIS_URL", "MARKET_PROVIDERS", "DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    s = MarketSettings(_env_file=None)  # type: ignore[call-arg]
    assert s.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path}/trading.db"
    assert s.redis_url is None
    assert s.provider_order() == ["csv", "yfinance"]  # shared CSV folder exists here
    monkeypatch.setenv("MARKET_PROVIDERS", "yfinance, csv")
    assert MarketSettings(_env_file=None).provider_order() == ["yfinance", "csv"]  # type: ignore[call-arg]
    monkeypatch.setenv("MARKET_PROVIDERS", "bloomberg")
    with pytest.raises(ValueError, match="unknown providers"):
        MarketSettings(_env_file=None)  # type: ignore[call-arg]


def test_lru_evicts_oldest_and_expires() -> None:
    lru = LRUCache(maxsize=2)
    lru.set("a", 1, 60)
    lru.set("b", 2, 60)
    assert lru.get("a") == 1  # a is now most recent
    lru.set("c", 3, 60)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    lru.set("d", 4, -1)
    assert lru.get("d") is None


def test_lru_is_bounded_by_bytes_too() -> None:
    lru = LRUCache(maxsize=100, max_bytes=1000)
    for i in range(5):
        lru.set(f"k{i}", i, 60, size=300)
    assert len(lru) == 3 and lru.bytes == 900
    assert lru.get("k0") is None and lru.get("k4") == 4
    lru.set("huge", "x", 60, size=5000)  # larger than the whole budget: not kept
    assert lru.get("huge") is None and lru.bytes == 900
    lru.set("k4", 4, 60, size=100)  # replacing an entry releases its old size
    assert lru.bytes == 700


def test_cache_without_redis_is_l1_only() -> None:
    async def go() -> None:
        cache = Cache(redis_url=None, l1_size=10)
        assert await cache.get("k") == (None, None)
        await cache.set("k", {"v": 1}, 60)
        assert await cache.get("k") == ({"v": 1}, "l1")
        assert await cache.ping() is None
        await cache.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    "covered,expected",
    [
        ([], [(date(2020, 1, 1), date(2020, 12, 31))]),
        ([(date(2019, 1, 1), date(2021, 1, 1))], []),
        (
            [(date(2020, 3, 1), date(2020, 3, 31)), (date(2020, 6, 1), date(2020, 6, 30))],
            [
                (date(2020, 1, 1), date(2020, 2, 29)),
                (date(2020, 4, 1), date(2020, 5, 31)),
                (date(2020, 7, 1), date(2020, 12, 31)),
            ],
        ),
        ([(date(2019, 6, 1), date(2020, 6, 30))], [(date(2020, 7, 1), date(2020, 12, 31))]),
    ],
)
def test_only_missing_ranges_are_fetched(covered, expected) -> None:
    assert _missing_ranges(date(2020, 1, 1), date(2020, 12, 31), covered) == expected


def tiny_app(token: str | None = None) -> FastAPI:
    from pydantic import BaseModel, SecretStr

    class Echo(BaseModel):
        value: int

    app = FastAPI()
    install_error_handlers(app)
    install_bearer_auth(app, SecretStr(token) if token else None, open_paths=set())

    @app.get("/echo/{value}", response_model=Echo)
    async def echo(value: int) -> Echo:
        if value == 404:
            raise NotFoundError("no such thing", field="value")
        return Echo(value=value)

    return app


def test_service_client_in_process_and_over_the_network() -> None:
    from pydantic import BaseModel

    class Echo(BaseModel):
        value: int

    async def call(client: ServiceClient) -> None:
        assert (await client.get_model("/echo/7", Echo)).value == 7
        with pytest.raises(UpstreamProblemError) as err:
            await client.get_model("/echo/404", Echo)
        assert err.value.status == 404 and err.value.code == "not_found"
        assert err.value.field == "value"
        with pytest.raises(UpstreamProblemError) as bad:
            await client.get_model("/echo/x", Echo)
        assert bad.value.status == 422 and bad.value.field == "value"
        await client.aclose()

    app = tiny_app(token="t0k")
    asyncio.run(call(ServiceClient("echo", app=app, token="t0k")))
    with serve_in_thread(app, free_port()) as url:
        asyncio.run(call(ServiceClient("echo", base_url=url, token="t0k")))

        async def unauthorised() -> None:
            client = ServiceClient("echo", base_url=url)
            with pytest.raises(UpstreamProblemError) as err:
                await client.get_model("/echo/1", Echo)
            assert err.value.status == 401
            await client.aclose()

        asyncio.run(unauthorised())


def test_service_client_names_a_service_that_is_down() -> None:
    from pydantic import BaseModel

    async def go() -> None:
        client = ServiceClient("backtest", base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
        with pytest.raises(ServiceUnavailableError, match="backtest service is unreachable"):
            await client.get_model("/x", BaseModel)
        await client.aclose()

    asyncio.run(go())


def test_tracebacks_are_masked_too() -> None:
    from shared.logging import MaskingFormatter

    formatter = MaskingFormatter("%(message)s")
    try:
        raise ConnectionError("cannot reach postgresql+asyncpg://app:hunter2@db:5432/trading")
    except ConnectionError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", None, exc_info=sys.exc_info()
        )
    text = formatter.format(record)
    assert "Traceback" in text and "ConnectionError" in text
    assert "hunter2" not in text


class EchoBody(BaseModel):
    n: int


def test_malformed_json_is_a_400_problem_naming_the_body() -> None:
    from fastapi.testclient import TestClient

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: EchoBody) -> EchoBody:
        return body

    with TestClient(app) as client:
        bad = client.post(
            "/echo", content=b'{"n": 1,,}', headers={"content-type": "application/json"}
        )
        invalid = client.post("/echo", json={"n": "x"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["code"] == "bad_request" and bad.json()["field"] == "body"
    assert invalid.status_code == 422 and invalid.json()["field"] == "n"


def test_service_client_prefers_the_url_then_the_co_hosted_app() -> None:
    from shared.http import register_local_app, service_client, unregister_local_app

    app = FastAPI()

    @app.get("/who")
    async def who() -> dict[str, str]:
        return {"me": "in-process"}

    async def ask(client: ServiceClient) -> dict[str, str]:
        async with client:
            return dict((await client.request("GET", "/who")).json())

    register_local_app("widgets", app)
    try:
        assert asyncio.run(ask(service_client("widgets", None))) == {"me": "in-process"}
        remote = service_client("widgets", "http://widgets.internal:9000/")
        assert str(remote.http.base_url).rstrip("/") == "http://widgets.internal:9000"
        asyncio.run(remote.aclose())
    finally:
        unregister_local_app("widgets", app)
    fallback = service_client("widgets", None)
    assert str(fallback.http.base_url).rstrip("/") == "http://127.0.0.1:8000/widgets"
    asyncio.run(fallback.aclose())
