"""E2E: the official MCP client trains a model through the gateway and sees its progress.

The market and predictor services run embedded in the gateway (real CSV bars, SQLite); the
gateway's streamable-HTTP app is served by uvicorn in a thread; the `mcp` SDK's
ClientSession calls `predictor_train_models` (a small LSTM and XGBoost, trained in a job
worker process) and records the progress notifications: per LSTM epoch and per ten trees.
Then it asks for a prediction and the model's record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway_mcp.server import build_gateway, http_app
from gateway_mcp.settings import GatewaySettings
from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from services.predictor.app import create_app as predictor_app
from services.predictor.settings import PredictorSettings
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR

pytestmark = pytest.mark.e2e

Updates = list[tuple[float, float | None, str | None]]
TRAIN = {
    "symbols": ["AAPL"],
    "start_date": "2017-01-01",
    "end_date": "2019-12-31",
    "lstm": {"size": "small", "epochs": 3, "patience": 3},
    "seed": 5,
}


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    """Serve the gateway (market + predictor embedded) over streamable HTTP in a thread."""
    specs = tmp_path / "openapi"
    specs.mkdir()
    for name in ("market", "predictor"):
        (specs / f"{name}.json").write_text((OPENAPI_DIR / f"{name}.json").read_text(), "utf-8")
    db = f"sqlite+aiosqlite:///{tmp_path / 'trading.db'}"
    factories = {
        "market": lambda: market_app(
            MarketSettings(
                data_dir=tmp_path,
                database_url=db,
                market_data_dir=SHARED_CSV_DIR,
                market_providers=["csv"],
            )
        ),
        "predictor": lambda: predictor_app(
            PredictorSettings(
                data_dir=tmp_path,
                database_url=db,
                redis_url=None,
                job_progress_interval_s=0.05,
                dask_scheduler_address=None,
            )
        ),
    }
    settings = GatewaySettings(
        spec_dir=specs, job_poll_interval_s=0.05, token=None, call_budget_s=600.0
    )
    gateway = build_gateway(settings, app_factories=factories)
    with serve_in_thread(http_app(gateway, settings), free_port()) as url:
        yield url


async def _session(
    url: str, calls: list[tuple[str, dict[str, Any]]], updates: Updates
) -> list[Any]:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    results = []
    with anyio.fail_after(280):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=280)) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for tool, args in calls:
                results.append(await session.call_tool(tool, args, progress_callback=on_progress))
    return results


def test_the_mcp_client_sees_training_progress_then_predicts(gateway_url: str) -> None:
    updates: Updates = []
    calls = [
        ("predictor_train_models", TRAIN),
        ("predictor_predict", {"symbol": "AAPL", "as_of": "2020-03-02"}),
        ("predictor_get_model_info", {"model": "default"}),
    ]
    trained, predicted, info = anyio.run(_session, gateway_url, calls, updates)

    assert not trained.is_error, trained.content
    result = trained.structured_content
    assert result["version"] == "1.0.0" and result["models"] == ["lstm", "xgboost"]
    assert "verdict" in result and set(result["test"]["baselines"]) == {"majority", "previous"}
    messages = [m or "" for _, _, m in updates]
    epochs = [m for m in messages if m.startswith("lstm: epoch")]
    assert epochs and epochs[-1].startswith("lstm: epoch 3/3")
    assert any(m.startswith("xgboost: tree") for m in messages)
    progress = [p for p, _, _ in updates]
    assert progress == sorted(set(progress))  # MCP progress only ever increases
    assert updates[-1][0] == updates[-1][1]  # it ends at its total

    assert not predicted.is_error, predicted.content
    call = predicted.structured_content
    assert call["version"] == "1.0.0" and set(call["members"]) == {"lstm", "xgboost"}
    assert call["direction"] in ("down", "neutral", "up")
    assert call["beats_baselines"] == result["beats_baselines"]
    assert not info.is_error and info.structured_content["active_version"] == "1.0.0"
