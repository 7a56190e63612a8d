"""Work is bounded before it starts and stops when nobody wants it any more (issue 14,
sections 1, 2 and 5): searches counted before their grid exists, the CSCV cost in the
job-or-not rule, cancellable CSCV chunks and direct answers, bounded charts, lists and
Monte Carlo reads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from starlette.requests import Request

from services.backtest import grid
from services.backtest.optimize import Inline, overfitting
from services.backtest.routes import ClientGoneError, answer_directly
from services.backtest.service import BacktestService
from services.backtest.service.reads import snap_chart_size
from shared.http import local_app, unregister_local_app
from shared.jobs import JobCancelledError, cancel_path, task_cancelled
from shared.jobs.tasks import run_with_channel
from tests.unit.backtest.service.conftest import GOOG_SMA, platform_client

SAFETY_S = 20.0  # a bound on every loop below, never an assertion about speed


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A running platform (market and backtest, in-process)."""
    path = tmp_path_factory.mktemp("bounded")
    with platform_client(path) as c:
        yield c
    unregister_local_app("market")
    unregister_local_app("backtest")


def service() -> BacktestService:
    app: Any = local_app("backtest")
    return app.state.backtest  # type: ignore[no-any-return]


def statements(svc: BacktestService) -> list[str]:
    """Return a list that fills with every SQL statement the service runs from now on."""
    seen: list[str] = []
    event.listen(
        svc.db.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: seen.append(sql),
    )
    return seen


# ---- section 1: counted before allocated; the whole cost decides job or not ------------


def test_an_oversized_search_is_refused_before_its_grid_is_built(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = grid._mesh
    monkeypatch.setattr(grid, "_mesh", lambda values: built.append(1) or real(values))
    body = {  # ~60,000 pairs x 2,150 bars: over the 60M trial-bar limit
        **GOOG_SMA,
        "param_grid": {
            "fast": {"start": 2, "stop": 200, "step": 1},
            "slow": {"start": 3, "stop": 400, "step": 1},
        },
    }

    answer = client.post("/backtest/optimize", json=body)

    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "param_grid"
    assert "trial-bars" in answer.json()["detail"]
    assert built == []  # the grid was never allocated


def test_count_search_matches_the_planned_trials() -> None:
    from services.backtest.schemas import SearchSettings
    from services.backtest.strategies import get_strategy

    cases = [
        ("sma_crossover", {"fast": {"start": 2, "stop": 50, "step": 1}, "slow": [10, 20, 90]}, []),
        (
            "sma_crossover",
            {
                "fast": {"start": 2, "stop": 40, "step": 2},
                "slow": {"start": 3, "stop": 90, "step": 3},
            },
            ["slow != fast", "slow <= 60"],
        ),
        (
            "mean_reversion",
            {"oversold": {"start": 10, "stop": 50, "step": 5}, "overbought": [40, 60, 80]},
            ["oversold > 15"],
        ),
    ]
    for name, values, constraints in cases:
        request = SearchSettings(param_grid=values, constraints=constraints)
        fixed = get_strategy(name).params()
        counted = grid.count_search(request, name, fixed)
        planned = grid.plan_search(request, name, fixed)
        assert counted.exact and counted.trials == len(planned.combos), (name, counted)


def test_a_search_whose_cscv_is_expensive_runs_as_a_job(client: TestClient) -> None:
    body = {  # ~5,000 pairs on 45 bars: 0.2M trial-bars, but 12,870 CSCV splits each
        **GOOG_SMA,
        "start_date": "2010-01-04",
        "end_date": "2010-03-09",
        "pbo_splits": 16,
        "param_grid": {
            "fast": {"start": 2, "stop": 60, "step": 1},
            "slow": {"start": 3, "stop": 120, "step": 1},
        },
    }

    answer = client.post("/backtest/optimize", json=body)
    if answer.status_code == 202:
        client.post(cancel_path(answer.headers["location"]))

    assert answer.status_code == 202, answer.text[:300]


# ---- section 2: cancellation and disconnects stop the work -----------------------------


class _Flag:
    """A task channel whose cancel flag turns on at the n-th look."""

    def __init__(self, at: int) -> None:
        self.at, self.looks = at, 0

    def report(self, done: float, total: float | None, message: str | None) -> None:
        pass

    def cancelled(self) -> bool:
        self.looks += 1
        return self.looks >= self.at


def test_the_cscv_phase_stops_between_chunks_when_cancelled() -> None:
    rng = np.random.default_rng(3)
    k, splits = 20_000, 16  # 6,435 split pairs in chunks of 500: 13 chunks
    sums = rng.normal(0.0, 0.01, (k, splits + 1))
    squares = sums**2 + 0.001
    blocks = np.stack([sums, squares], axis=1)
    best = rng.normal(0.0, 0.01, 160)
    flag = _Flag(at=2)

    with pytest.raises(JobCancelledError):
        run_with_channel(flag, overfitting, (blocks, best[None, :], 0, splits, 0.0))

    assert flag.looks == 2  # stopped at the second chunk, not after the thirteenth


def loop_until_cancelled(seen: list[str]) -> str:
    start = time.monotonic()
    while time.monotonic() - start < SAFETY_S:
        if task_cancelled():
            seen.append("cancelled")
            return "stopped"
        time.sleep(0.01)
    seen.append("ran out")
    return "ran out"


async def _wait_for(seen: list[str]) -> None:
    start = time.monotonic()
    while time.monotonic() - start < SAFETY_S + 5:
        if seen:
            return
        await asyncio.sleep(0.01)


def test_a_direct_answers_work_stops_when_its_client_disconnects() -> None:
    seen: list[str] = []
    started = threading.Event()

    def work(seen: list[str]) -> str:
        started.set()
        return loop_until_cancelled(seen)

    async def disconnect() -> dict[str, Any]:
        # the client leaves once the work runs, however slow the machine; until then a
        # check for a disconnect (a receive in a cancelled scope) finds nothing
        if not started.is_set():
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def go() -> None:
        request = Request(
            {"type": "http", "method": "POST", "path": "/", "headers": []}, disconnect
        )
        with pytest.raises(ClientGoneError):
            await answer_directly(request, Inline().run(work, seen), 60.0)
        await _wait_for(seen)

    asyncio.run(go())
    assert seen == ["cancelled"]


def test_a_direct_answer_past_its_time_limit_is_a_503_and_its_work_stops() -> None:
    seen: list[str] = []

    async def connected() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def go() -> Any:
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, connected)
        try:
            await answer_directly(request, Inline().run(loop_until_cancelled, seen), 0.1)
        except Exception as e:
            await _wait_for(seen)
            return e
        return None

    error = asyncio.run(go())
    assert (
        getattr(error, "status", None) == 503 and getattr(error, "code", None) == "direct_timeout"
    )
    assert seen == ["cancelled"]


def test_the_direct_time_limit_answers_a_503_problem_over_http(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {  # 1,605 pairs on 2,148 bars: answered directly, in milliseconds
        **GOOG_SMA,
        "param_grid": {
            "fast": {"start": 5, "stop": 50, "step": 1},
            "slow": {"start": 10, "stop": 200, "step": 5},
        },
        "constraints": ["fast < slow"],
    }
    monkeypatch.setattr(service().settings, "backtest_direct_timeout_s", 0.001)
    answer = client.post("/backtest/optimize", json=body)

    assert answer.status_code == 503, answer.text[:300]
    assert answer.json()["code"] == "direct_timeout"
    assert client.get("/backtest/strategies").status_code == 200  # the service goes on


# ---- section 1: charts, lists; section 5: Monte Carlo reads one column -------------------


def test_chart_sizes_snap_to_a_few_buckets() -> None:
    keys = {snap_chart_size(w, h) for w in range(300, 2401, 7) for h in range(200, 1601, 7)}

    assert len(keys) <= 64
    assert snap_chart_size(800, 600) == (800, 600)
    assert snap_chart_size(1003, 598) == (1000, 600)


def test_lists_marks_and_monte_carlo_read_only_the_columns_they_answer(
    client: TestClient, tmp_path: Path
) -> None:
    run = client.post("/backtest/backtest", json={**GOOG_SMA, "symbol": "KO"}).json()
    svc = service()
    seen = statements(svc)

    listed = client.get("/backtest/results", params={"limit": 1000})
    mc = client.post("/backtest/monte_carlo", json={"run_id": run["run_id"], "n_runs": 50})
    chart = client.get(f"/backtest/results/{run['run_id']}/chart.png", params={"width": 611})

    assert listed.status_code == 200 and mc.status_code == 200 and chart.status_code == 200
    assert chart.content[:4] == b"\x89PNG"
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    lists = [s for s in selects if "backtest_results.total_return" in s and "LIMIT" in s]
    assert lists and all("series" not in s and "configuration" not in s for s in lists)
    fills = [s for s in selects if "backtest_trades" in s and "count(" not in s]
    assert fills and all("backtest_trades.price" not in s for s in fills)
