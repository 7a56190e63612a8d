"""Strict arguments (unknown body fields and query parameters named, with the closest valid
one), `GET /jobs/{id}?wait_s=` long polls, and a repeated submission answering its job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import Field

from shared.app import service_app
from shared.config import BaseServiceSettings
from shared.errors import unknown_argument_message
from shared.jobs import cancel_path
from shared.strict import RequestModel
from tests.unit.shared.job_app import create_app, job_settings


class Params(RequestModel):
    fast: int = 10
    slow: int = 30


class Cross(RequestModel):
    name: Literal["cross"]
    params: Params = Field(default_factory=Params)


class Hold(RequestModel):
    name: Literal["hold"]


class RunRequest(RequestModel):
    symbol: str
    commission: float = 0.0
    commission_rate: float = 0.0
    strategy: Cross | Hold = Field(discriminator="name")


def strict_app(tmp_path: Path) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield

    settings = BaseServiceSettings(data_dir=tmp_path, redis_url=None)
    app = service_app(title="Strict", description="", settings=settings, lifespan=lifespan)

    @app.get("/rsi/{symbol}", operation_id="get_rsi")
    async def get_rsi(symbol: str, period: int = Query(default=14)) -> dict[str, Any]:
        return {"symbol": symbol, "period": period}

    @app.post("/run", operation_id="run")
    async def run(body: RunRequest) -> dict[str, Any]:
        return body.model_dump()

    return app


def test_unknown_query_parameters_and_body_fields_are_named_with_the_closest_valid_one(
    tmp_path: Path,
) -> None:
    with TestClient(strict_app(tmp_path)) as client:
        ok = client.get("/rsi/AAPL", params={"period": 30})
        typo = client.get("/rsi/AAPL", params={"perid": 30})
        body = client.post(
            "/run",
            json={"symbol": "A", "commision": 0.1, "strategy": {"name": "cross"}},
        )
        nested = client.post(
            "/run",
            json={"symbol": "A", "strategy": {"name": "cross", "params": {"fsat": 3}}},
        )
        spec = client.get("/openapi.json").json()

    assert ok.json() == {"symbol": "AAPL", "period": 30}
    assert typo.status_code == 422
    problem = typo.json()
    assert problem["field"] == "perid"
    assert problem["detail"] == "unknown argument `perid`; did you mean `period`?"
    assert body.status_code == 422
    assert body.json()["field"] == "commision"
    assert "did you mean `commission`?" in body.json()["detail"]
    assert nested.status_code == 422
    assert nested.json()["field"] == "strategy.params.fsat"
    assert "unknown argument `fsat`; did you mean `fast`?" in nested.json()["detail"]
    assert spec["components"]["schemas"]["RunRequest"]["additionalProperties"] is False


def test_unknown_argument_message_names_valid_arguments_when_none_is_close() -> None:
    assert unknown_argument_message("zzz", ["period", "symbol"]) == (
        "unknown argument `zzz`; valid arguments: `period`, `symbol`"
    )
    assert unknown_argument_message("Period", ["period"]).endswith("did you mean `period`?")


def test_get_job_waits_for_the_end_and_a_repeated_submission_answers_its_job(
    tmp_path: Path,
) -> None:
    app = create_app(job_settings(tmp_path))
    with TestClient(app) as client:
        first = client.post("/spins", json={"limit_s": 30})
        again = client.post("/spins", json={"limit_s": 30})
        other = client.post("/spins", json={"limit_s": 29})
        keyed = client.post("/spins", json={"limit_s": 30}, headers={"Idempotency-Key": "k1"})
        keyed_again = client.post("/spins", json={"limit_s": 28}, headers={"Idempotency-Key": "k1"})
        url = first.headers["location"]
        t0 = time.monotonic()
        waited = client.get(url, params={"wait_s": 0.4}).json()
        waited_s = time.monotonic() - t0
        too_long = client.get(url, params={"wait_s": 31})
        for response in (first, other, keyed):
            client.post(cancel_path(response.headers["location"]))
        ended = client.get(url, params={"wait_s": 5}).json()
        rerun = client.post("/spins", json={"limit_s": 30})
        client.post(cancel_path(rerun.headers["location"]))

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]  # the same request: the same job
    assert other.json()["id"] != first.json()["id"]
    assert keyed.json()["id"] not in {first.json()["id"], other.json()["id"]}
    assert keyed_again.json()["id"] == keyed.json()["id"]  # same key, other body: same job
    assert waited["status"] == "running"
    assert waited_s >= 0.35  # it waited (no upper bound asserted: the machine is shared)
    assert too_long.status_code == 422
    assert too_long.json()["field"] == "wait_s"
    assert ended["status"] == "failed" and ended["error"]["code"] == "cancelled"
    assert rerun.json()["id"] != first.json()["id"]  # the first one ended: a new job
