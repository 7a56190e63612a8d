"""Server-side limits of every service app: body size (413), concurrency (503), the spec."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.http import app_lifespan
from shared.limits import Slots
from tests.unit.shared.limits_app import create_app, limits_settings, open_gate

WAIT_S = 30.0  # a safety bound on waits, never an assertion about speed


def run(app: FastAPI, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run body with an in-process client of app (lifespan entered) on one event loop."""

    async def go() -> Any:
        async with app_lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://limits") as c:
                return await asyncio.wait_for(body(c), WAIT_S)

    return asyncio.run(go())


async def until_waiting(app: FastAPI, in_use: int, waiting: int = 0) -> None:
    """Wait until the app's slots show in_use requests running and waiting more queued."""
    slots = app.state.slots
    while True:
        if slots.in_use == in_use and slots.waiting == waiting:
            return
        await asyncio.sleep(0.005)


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    assert problem["status"] == status and problem["code"] == code
    return problem


def test_a_declared_oversize_body_is_refused_with_413_before_the_app_reads_it(
    tmp_path: Path,
) -> None:
    app = create_app(limits_settings(tmp_path, max_body_bytes=1000))

    async def body(c: httpx.AsyncClient) -> None:
        small = await c.post("/things", json={"name": "x" * 900})
        assert small.status_code == 200 and small.json() == {"length": 900}
        big = await c.post("/things", json={"name": "x" * 5000})
        problem = assert_problem(big, 413, "payload_too_large")
        assert problem["field"] == "body" and "1000 bytes" in problem["detail"]
        assert problem["instance"] == "/things"

    run(app, body)


def test_a_streamed_body_is_cut_with_413_once_it_passes_the_limit(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path, max_body_bytes=1000))
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(100):  # 10,000 bytes without a Content-Length
            sent.append(100)
            yield b"x" * 100
        yield b'"}'

    async def body(c: httpx.AsyncClient) -> None:
        answer = await c.post(
            "/things", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in answer.request.headers
        assert_problem(answer, 413, "payload_too_large")

    run(app, body)


def test_over_the_concurrency_limit_answers_503_with_retry_after_and_ops_routes_still_answer(
    tmp_path: Path,
) -> None:
    settings = limits_settings(
        tmp_path, max_concurrent_requests=2, max_queued_requests=0, overload_retry_after_s=7
    )
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        held = [asyncio.create_task(c.get("/wait/a")) for _ in range(2)]
        await until_waiting(app, in_use=2)
        refused = await c.get("/echo/1")
        problem = assert_problem(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "7"
        assert "handling 2 requests" in problem["detail"]
        # Ops routes never wait for a slot: an orchestrator can still ask.
        assert (await c.get("/health")).status_code == 200
        metrics = await c.get("/metrics")
        assert metrics.status_code == 200
        assert 'http_requests_rejected_total{reason="overloaded",service="limits"}' in metrics.text
        open_gate(app, "a")
        assert [(await t).status_code for t in held] == [200, 200]
        assert (await c.get("/echo/2")).json() == {"n": 2}
        assert app.state.slots.in_use == 0

    run(app, body)


def test_requests_over_the_limit_wait_in_a_bounded_queue(tmp_path: Path) -> None:
    settings = limits_settings(
        tmp_path, max_concurrent_requests=1, max_queued_requests=1, queue_timeout_s=WAIT_S
    )
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        first = asyncio.create_task(c.get("/wait/b"))
        await until_waiting(app, in_use=1)
        queued = asyncio.create_task(c.get("/echo/5"))
        await until_waiting(app, in_use=1, waiting=1)
        assert_problem(await c.get("/echo/6"), 503, "overloaded")  # the queue is full
        open_gate(app, "b")
        assert (await first).status_code == 200
        assert (await queued).json() == {"n": 5}  # it got the slot when the first ended

    run(app, body)


def test_a_queued_request_gives_up_after_the_queue_timeout(tmp_path: Path) -> None:
    settings = limits_settings(
        tmp_path, max_concurrent_requests=1, max_queued_requests=5, queue_timeout_s=0.05
    )
    app = create_app(settings)

    async def body(c: httpx.AsyncClient) -> None:
        first = asyncio.create_task(c.get("/wait/c"))
        await until_waiting(app, in_use=1)
        answer = await c.get("/echo/1")
        assert_problem(answer, 503, "overloaded")
        assert app.state.slots.waiting == 0
        open_gate(app, "c")
        await first

    run(app, body)


def test_slots_survive_cancelled_waiters() -> None:
    async def go() -> None:
        slots = Slots(1, max_queued=10, queue_timeout_s=WAIT_S)
        assert await slots.acquire()
        waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
        for _ in range(3):
            await asyncio.sleep(0)  # let the three waiters queue
        assert slots.waiting == 3
        waiters[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        slots.release()  # goes to the second waiter, not the cancelled one
        assert await waiters[1]
        assert slots.in_use == 1 and slots.waiting == 1
        slots.release()
        assert await waiters[2]
        slots.release()
        assert slots.in_use == 0 and slots.waiting == 0

    asyncio.run(go())


def test_the_spec_declares_the_limit_answers_on_every_operation_but_ops_routes(
    tmp_path: Path,
) -> None:
    spec = create_app(limits_settings(tmp_path)).openapi()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            if "ops" in op.get("tags", []):
                assert "429" not in responses, path
                continue
            for code in ("429", "503"):
                assert code in responses, (path, method, code)
                assert "Retry-After" in responses[code]["headers"]
                content = responses[code]["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert ("413" in responses) == ("requestBody" in op), (path, method)
            assert ("400" in responses) == ("requestBody" in op), (path, method)
            assert "Retry-After" not in responses.get("400", {}).get("headers", {})
    assert "Problem" in spec["components"]["schemas"]
    assert spec["paths"]["/metrics"]["get"]["tags"] == ["ops"]


def test_a_405_names_every_method_of_the_path(tmp_path: Path) -> None:
    app = create_app(limits_settings(tmp_path))

    async def body(c: httpx.AsyncClient) -> None:
        answer = await c.request("OPTIONS", "/echo/1")
        assert_problem(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "DELETE, GET, HEAD"

    run(app, body)
