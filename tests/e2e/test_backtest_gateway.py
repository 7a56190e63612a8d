"""E2E: Claude's view of the backtest service, through the gateway over streamable HTTP with
the official `mcp` SDK client: a backtest, its chart as an image, an optimisation and a
walk-forward that run as jobs with progress notifications, and an `ml_ensemble` walk-forward
whose windows train through the (embedded) predictor."""

from __future__ import annotations

import base64
import io
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
from services.backtest.app import create_app as create_backtest
from services.backtest.settings import BacktestSettings
from services.market.app import create_app as create_market
from services.market.settings import SHARED_CSV_DIR
from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.conftest import market_settings
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR

pytestmark = pytest.mark.e2e

CONFIG: dict[str, Any] = {
    "symbol": "AAPL",
    "start_date": "2014-01-01",
    "end_date": "2023-10-27",
    "initial_capital": 10000,
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
    "commission_rate": 0.001,
}
ML_WALK_FORWARD: dict[str, Any] = {
    "symbol": "AAPL",
    "start_date": "2017-01-01",
    "end_date": "2019-12-31",
    "strategy": {
        "name": "ml_ensemble",
        "params": {"min_confidence": 0.0, "training": {"models": ["xgboost"], "seed": 5}},
    },
    "train_period": 252,
    "test_period": 126,
    "retrain_every": 2,
    "commission_rate": 0.001,
}
Updates = list[tuple[float, float | None, str | None]]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the gateway (market, backtest and predictor embedded; long work as jobs)."""
    tmp: Path = tmp_path_factory.mktemp("backtest-gateway")
    backtest = BacktestSettings(
        data_dir=tmp,
        database_url=None,
        redis_url=None,
        backtest_sync_max_trial_bars=0,  # every search and walk-forward runs as a job
        job_progress_interval_s=0.0,
    )
    settings = GatewaySettings(
        spec_dir=OPENAPI_DIR, job_poll_interval_s=0.02, token=None, call_budget_s=600.0
    )
    gateway = build_gateway(
        settings,
        app_factories={
            "market": lambda: create_market(market_settings(tmp, SHARED_CSV_DIR)),
            "backtest": lambda: create_backtest(backtest),
            "predictor": lambda: create_predictor(
                PredictorSettings(
                    data_dir=tmp,
                    database_url=None,
                    redis_url=None,
                    job_progress_interval_s=0.0,
                    dask_scheduler_address=None,
                )
            ),
        },
    )
    with serve_in_thread(http_app(gateway, settings), free_port()) as url:
        yield url
    for name in ("market", "backtest", "predictor"):
        unregister_local_app(name)


async def _calls(url: str, calls: list[tuple[str, dict[str, Any]]], updates: Updates) -> list[Any]:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    results = []
    with anyio.fail_after(240):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60, read=240)) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for name, args in calls:
                results.append(await session.call_tool(name, args, progress_callback=on_progress))
    return results


def test_a_backtest_and_its_chart_reach_the_client_as_data_and_an_image(gateway_url: str) -> None:
    import matplotlib.image

    updates: Updates = []
    (run,) = anyio.run(_calls, gateway_url, [("backtest_run_backtest", CONFIG)], updates)
    assert not run.is_error, run.content
    body = run.structured_content
    assert body["metrics"]["final_capital"] > 0 and "benchmark" in body
    (chart,) = anyio.run(
        _calls,
        gateway_url,
        [("backtest_get_chart", {"run_id": body["run_id"], "width": 600, "height": 450})],
        updates,
    )

    assert not chart.is_error, chart.content
    (block,) = chart.content
    assert block.type == "image" and block.mime_type == "image/png"
    pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(block.data)), format="png")
    assert pixels.shape[:2] == (450, 600)  # a size bucket: drawn as asked


def test_searches_run_as_jobs_and_report_progress_to_the_client(gateway_url: str) -> None:
    updates: Updates = []
    optimised, walked = anyio.run(
        _calls,
        gateway_url,
        [
            (
                "backtest_optimize_parameters",
                {
                    **CONFIG,
                    "param_grid": {"fast": [5, 10, 20], "slow": [30, 50, 100]},
                    "constraints": ["fast < slow"],
                },
            ),
            (
                "backtest_walk_forward",
                {**CONFIG, "param_grid": {"fast": [5, 10]}, "test_period": 126},
            ),
        ],
        updates,
    )

    assert not optimised.is_error, optimised.content
    result = optimised.structured_content
    assert result["n_trials"] == 9 and 0 <= result["pbo"] <= 1
    assert 0 <= result["deflated_sharpe_ratio"] <= 1 and result["reading"]
    assert not walked.is_error, walked.content
    windows = walked.structured_content
    assert windows["n_windows"] == len(windows["windows"]) > 5
    assert any(m and "windows done" in m for _, _, m in updates)
    assert any(total == windows["n_windows"] for _, total, _ in updates)


def test_an_ml_walk_forward_trains_each_window_and_reports_progress(gateway_url: str) -> None:
    updates: Updates = []
    (walked,) = anyio.run(
        _calls, gateway_url, [("backtest_walk_forward", ML_WALK_FORWARD)], updates
    )
    assert not walked.is_error, walked.content
    wf = walked.structured_content
    n = wf["n_windows"]
    assert n == len(wf["windows"]) >= 3
    ml = wf["ml"]
    assert len(ml["versions"]) == (n + 1) // 2
    assert [w["ml"]["trained"] for w in wf["windows"]] == [i % 2 == 0 for i in range(n)]
    assert 0 <= ml["hit_rate"]["model"] <= 1 and ml["reading"] in wf["reading"]
    # Claude saw the trainings and the windows go by, never going backwards
    messages = [m for _, _, m in updates if m]
    assert any("training walk-forward on" in m for m in messages)
    assert any("out of sample" in m for m in messages)
    done = [p for p, _, _ in updates]
    assert done == sorted(done)
