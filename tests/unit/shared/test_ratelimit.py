"""Incoming rate limits kept in-process (no Redis): 429 problem details with Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from pydantic import SecretStr

from shared.ratelimit import LocalWindows, RateLimiter, client_id
from tests.unit.shared.limits_app import create_app, limits_settings
from tests.unit.shared.test_limits import assert_problem, run


def test_the_limit_is_per_client_and_operation_and_answers_429_with_retry_after(
    tmp_path: Path,
) -> None:
    app = create_app(limits_settings(tmp_path, rate_limit_per_minute=3))

    async def body(c: httpx.AsyncClient) -> None:
        assert [(await c.get(f"/echo/{i}")).status_code for i in range(3)] == [200] * 3
        refused = await c.get("/echo/4")
        problem = assert_problem(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "3 requests per minute" in problem["detail"] and "echo" in problem["detail"]
        # Another operation has its own counter; ops routes are never limited.
        assert (await c.post("/things", json={"name": "a"})).status_code == 200
        for _ in range(5):
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
        # Another client address has its own counter.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 4000)),
            base_url="http://limits",
        )
        async with other:
            assert (await other.get("/echo/1")).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert 'http_requests_rejected_total{reason="rate_limited",service="limits"}' in metrics

    run(app, body)


def test_with_a_service_token_the_limit_follows_the_token(tmp_path: Path) -> None:
    settings = limits_settings(tmp_path, rate_limit_per_minute=2, api_token=SecretStr("s3cret"))
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        auth = {"Authorization": "Bearer s3cret"}
        assert (await c.get("/echo/1", headers=auth)).status_code == 200
        assert (await c.get("/echo/1", headers=auth)).status_code == 200
        assert_problem(await c.get("/echo/1", headers=auth), 429, "rate_limited")
        # Wrong tokens are refused before they are counted.
        for _ in range(3):
            assert_problem(await c.get("/echo/1"), 401, "unauthorized")

    run(app, body)


def test_a_limit_of_zero_turns_rate_limiting_off(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path, rate_limit_per_minute=0))

    async def body(c: httpx.AsyncClient) -> None:
        assert {(await c.get("/echo/1")).status_code for _ in range(20)} == {200}

    run(app, body)


def test_windows_restart_after_a_minute_and_stay_bounded() -> None:
    windows = LocalWindows(max_keys=3)
    assert windows.hit("a", 60)[0] == 1
    assert windows.hit("a", 60)[0] == 2
    count, left = windows.hit("b", 60)
    assert count == 1 and 1 <= left <= 60
    windows._windows["a"] = (0.0, 99)  # its window ended long ago
    assert windows.hit("a", 60)[0] == 1
    for key in "cdef":
        windows.hit(key, 60)
    assert len(windows) == 3


def test_a_limiter_without_redis_counts_in_process() -> None:
    async def go() -> None:
        limiter = RateLimiter(per_minute=2, redis_url=None)
        async with limiter.running():
            decisions = [await limiter.hit("a-1.2.3.4", "get_price") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert [d.count for d in decisions] == [1, 2, 3]
        assert limiter.key("u", "get_price") == "ratelimit:u:get_price"

    asyncio.run(go())


def test_who_a_request_counts_against() -> None:
    scope = {"client": ("1.2.3.4", 5), "headers": [(b"authorization", b"Bearer abc")]}
    assert client_id(scope, trust_token=False) == "a-1.2.3.4"
    token_id = client_id(scope, trust_token=True)
    assert token_id.startswith("t-") and "abc" not in token_id
    assert client_id({"client": None, "headers": []}, trust_token=True) == "a-unknown"
