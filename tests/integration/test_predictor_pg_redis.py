"""The predictor on real PostgreSQL and Redis: train, predict, train again, roll back, restart,
predict again with identical output; Redis flushed or stale -> the active version comes back
from the database. The first version has both members (a small LSTM, trained in a worker
process); the second is XGBoost-only, which changes what the model is (a major version)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
import redis
from fastapi.testclient import TestClient

from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from services.predictor.app import create_app as predictor_app
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.integration.conftest import REDIS_URL
from trading.host import build_platform_app

pytestmark = pytest.mark.integration

P = "/predictor"
DAYS = ["2020-02-04", "2020-02-05", "2020-02-06"]


@contextmanager
def platform(pg_url: str, prefix: str, tmp: Any) -> Iterator[TestClient]:
    """Run market + predictor (a fresh process's worth of state) on PostgreSQL and Redis."""
    common: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": pg_url,
        "redis_url": REDIS_URL,
        "redis_prefix": prefix,
    }
    market = market_app(
        MarketSettings(**common, market_data_dir=SHARED_CSV_DIR, market_providers=["csv"])
    )
    predictor = predictor_app(
        PredictorSettings(**common, job_progress_interval_s=0.05, dask_scheduler_address=None)
    )
    try:
        with TestClient(build_platform_app({"market": market, "predictor": predictor})) as c:
            yield c
    finally:
        unregister_local_app("market", market)
        unregister_local_app("predictor", predictor)


def train(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"{P}/train", json=body)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 280
    messages: list[str] = []
    while time.monotonic() < deadline:
        status = client.get(answer.headers["location"]).json()
        messages.append(status["progress"]["message"] or "")
        if status["status"] == "succeeded":
            return {**status["result"], "_messages": messages}
        assert status["status"] != "failed", status
        time.sleep(0.1)
    raise AssertionError("training did not finish")


def predict(client: TestClient, day: str) -> dict[str, Any]:
    answer = client.post(f"{P}/predict", json={"symbol": "AAPL", "as_of": day})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def drop_predictions(r: redis.Redis, prefix: str) -> None:
    """Delete the cached predictions so the next answers are computed again."""
    keys = list(r.scan_iter(match=f"{prefix}prediction:*"))
    if keys:
        r.delete(*keys)


async def model_rows(pg_url: str) -> list[Any]:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return list(
            await conn.fetch(
                "select version, is_active, substr(model_data, 1, 2) as head, "
                "(select count(*) from predictions) as logged from model_states "
                "where model_name = 'default' order by created_at"
            )
        )
    finally:
        await conn.close()


def test_versions_rollback_restart_and_recovery_on_postgresql_and_redis(
    pg_url: str, redis_prefix: str, redis_client: redis.Redis, tmp_path: Any
) -> None:
    active_key = f"{redis_prefix}model:active:default"
    base = {"symbols": ["AAPL"], "start_date": "2016-01-01", "end_date": "2019-12-31"}
    with platform(pg_url, redis_prefix, tmp_path) as client:
        v1 = train(client, {**base, "lstm": {"size": "small", "epochs": 2}, "seed": 3})
        assert v1["version"] == "1.0.0" and v1["models"] == ["lstm", "xgboost"]
        assert v1["epochs_run"] == 2
        assert any(m.startswith("lstm: epoch") for m in v1["_messages"])
        assert set(v1["test"]["members"]) == {"lstm", "xgboost"}
        assert redis_client.get(active_key) == "1.0.0"
        first = [predict(client, d) for d in DAYS]
        assert {p["version"] for p in first} == {"1.0.0"}
        weights = [p["members"]["lstm"]["weight"] for p in first]
        assert weights == [0.5, 0.5, 0.5]

        v2 = train(client, {**base, "models": ["xgboost"], "seed": 4})
        assert (v2["version"], v2["previous_version"]) == ("2.0.0", "1.0.0")
        assert redis_client.get(active_key) == "2.0.0"
        assert predict(client, DAYS[0])["version"] == "2.0.0"

        rolled = client.post(f"{P}/rollback", json={"model": "default", "version": "1.0.0"})
        assert rolled.status_code == 200 and rolled.json()["previous_version"] == "2.0.0"
        assert redis_client.get(active_key) == "1.0.0"
        assert client.get(f"{P}/performance").json()["predictions"] == 3  # log flushed

    rows = asyncio.run(model_rows(pg_url))
    assert [(r["version"], r["is_active"]) for r in rows] == [("1.0.0", True), ("2.0.0", False)]
    assert all(r["head"] == b"PK" for r in rows)  # a zip of portable artifacts, no pickle
    assert rows[0]["logged"] == 4

    # a restarted service predicts exactly what 1.0.0 said before, computed again
    drop_predictions(redis_client, redis_prefix)
    with platform(pg_url, redis_prefix, tmp_path) as client:
        assert client.get(f"{P}/health").json()["loaded_models"] == []
        again = [predict(client, d) for d in DAYS]
        assert all(not p["cached"] for p in again)
        assert again == first

        # Redis loses everything: the database says which version is active
        for key in redis_client.scan_iter(match=f"{redis_prefix}*"):
            redis_client.delete(key)
        recovered = predict(client, DAYS[1])
        assert recovered["version"] == "1.0.0"
        assert {**recovered, "cached": False} == first[1]
        assert redis_client.get(active_key) == "1.0.0"

        # Redis names a version the database does not have: the database wins again
        drop_predictions(redis_client, redis_prefix)
        redis_client.set(active_key, "9.9.9")
        assert {**predict(client, DAYS[2]), "cached": False} == first[2]
        assert redis_client.get(active_key) == "1.0.0"
        info = client.get(f"{P}/model_info").json()
        assert info["active_version"] == "1.0.0"
        assert [v["version"] for v in info["versions"]] == ["2.0.0", "1.0.0"]
