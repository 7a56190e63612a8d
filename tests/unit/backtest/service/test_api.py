"""`POST /backtest` and the stored-run routes, end to end on real CSV bars through the market
service's HTTP contract (co-hosted in-process, as `trading serve` runs them)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.backtest.config import BacktestConfig, simulate_config
from services.backtest.engine.runner import Bars
from services.backtest.market import bars_digest
from services.backtest.metrics import bootstrap_mean_ci, returns_from_equity
from services.backtest.reports import benchmark_config
from tests.unit.backtest.service.conftest import GOOG_SMA, csv_frame


def run(api: TestClient, **changes: Any) -> dict[str, Any]:
    """POST a backtest (GOOG_SMA with changes); return its answer, failing on an error."""
    answer = api.post("/backtest/backtest", json={**GOOG_SMA, **changes})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def goog_bars() -> Bars:
    """Return GOOG's bars of the GOOG_SMA range straight from the CSV."""
    return Bars.from_frames({"GOOG": csv_frame("GOOG", "2004-08-19", "2013-03-01")})


def test_the_answer_is_the_engine_on_the_market_services_bars(api: TestClient) -> None:
    body = run(api)
    bars = goog_bars()
    config = BacktestConfig.model_validate(GOOG_SMA)
    sim = simulate_config(config, bars)
    bench = simulate_config(benchmark_config(config), bars)

    assert body["bars"] == bars.n_bars
    assert body["start"] == "2004-08-19" and body["end"] == "2013-03-01"
    assert body["bars_hash"] == bars_digest(bars, interval="1d", adjusted=False)
    assert body["metrics"]["final_capital"] == sim.final_capital
    assert body["metrics"]["total_trades"] == sim.n_trades
    assert body["trades"]["fills"] == len(sim.fills)
    assert body["benchmark"]["final_capital"] == bench.final_capital
    assert body["metrics"]["total_return"] == pytest.approx(sim.final_capital / 10_000 - 1)
    # fractions, not percents; the buy-and-hold benchmark is the same bars' price path
    assert -1 < body["metrics"]["max_drawdown"] < 0
    assert 0 <= body["metrics"]["win_rate"] <= 1
    assert body["benchmark"]["total_return"] == pytest.approx(
        bench.final_capital / 10_000 - 1, rel=1e-12
    )
    assert body["config"]["strategy"] == GOOG_SMA["strategy"]
    assert body["config"]["adjusted"] is False
    assert len(body["notes"]) >= 3


def test_the_equity_curve_is_downsampled_on_request_but_keeps_both_ends(api: TestClient) -> None:
    body = run(api, equity_points=7)
    curve = body["equity"]

    assert curve["points"] == 7 and curve["total_points"] == body["bars"]
    assert len(curve["timestamps"]) == len(curve["equity"]) == len(curve["benchmark"]) == 7
    assert curve["timestamps"][0] == "2004-08-19" and curve["timestamps"][-1] == "2013-03-01"
    assert curve["equity"][0] == 10_000 and curve["equity"][-1] == body["metrics"]["final_capital"]
    assert curve["benchmark"][-1] == body["benchmark"]["final_capital"]
    assert curve["timestamps"] == sorted(curve["timestamps"])


def test_a_stored_run_reads_back_as_it_was_answered(api: TestClient) -> None:
    body = run(api, equity_points=40)
    again = api.get(f"/backtest/results/{body['run_id']}", params={"equity_points": 40})

    assert again.status_code == 200
    assert again.json() == body
    assert body["links"] == {
        "result": f"/backtest/results/{body['run_id']}",
        "trades": f"/backtest/trades/{body['run_id']}",
        "chart": f"/backtest/results/{body['run_id']}/chart.png",
    }


def test_the_mean_returns_interval_is_answered_stored_and_the_same_when_asked_again(
    api: TestClient,
) -> None:
    # a configuration no other test runs: its interval is drawn while the run is stored
    strategy = {"name": "sma_crossover", "params": {"fast": 7, "slow": 41, "allow_short": True}}
    body = run(api, strategy=strategy)
    lo, hi = body["metrics"]["mean_return_ci"]
    config = BacktestConfig.model_validate({**GOOG_SMA, "strategy": strategy})
    sim = simulate_config(config, goog_bars())
    r = returns_from_equity(sim.equity, sim.initial_capital) - 0.02 / 252  # excess returns
    assert (lo, hi) == bootstrap_mean_ci(r, n_boot=1000)
    assert lo < r.mean() < hi
    stored = api.get(f"/backtest/results/{body['run_id']}").json()
    assert stored["metrics"] == body["metrics"]
    assert run(api, strategy=strategy)["metrics"] == body["metrics"]  # remembered


def test_trades_page_through_every_fill_with_the_seeds_columns(api: TestClient) -> None:
    body = run(api)
    url = f"/backtest/trades/{body['run_id']}"
    pages, offset = [], 0
    while offset is not None:
        page = api.get(url, params={"limit": 50, "offset": offset}).json()
        pages.append(page)
        offset = page["page"]["next_offset"]
    fills = [f for p in pages for f in p["trades"]]

    assert len(fills) == body["trades"]["fills"] == pages[0]["page"]["total"]
    assert set(fills[0]) >= {
        "timestamp",
        "symbol",
        "direction",
        "shares",
        "price",
        "commission",
        "slippage_cost",
        "total_cost",
        "pnl",
        "portfolio_value",
    }
    assert {f["direction"] for f in fills} == {"buy", "sell"}
    assert [f["timestamp"] for f in fills] == sorted(f["timestamp"] for f in fills)
    closing = [f for f in fills if f["pnl"] is not None]
    assert len(closing) == body["metrics"]["total_trades"]
    # everything is closed at the end: realised pnl adds up to the change in capital
    assert sum(f["pnl"] for f in closing) == pytest.approx(
        body["metrics"]["final_capital"] - 10_000, rel=1e-9
    )
    assert closing[-1]["reason"] == "end"
    assert sum(f["commission"] for f in fills) == pytest.approx(
        body["trades"]["total_commission"], rel=1e-12
    )


def test_a_portfolio_shares_cash_and_is_found_by_any_of_its_symbols(api: TestClient) -> None:
    body = run(
        api,
        symbol=None,
        symbols=["KO", "PG", "JNJ"],
        strategy={"name": "sma_crossover", "params": {"fast": 20, "slow": 50}},
        max_positions=2,
        start_date="2015-01-01",
        end_date="2019-12-31",
    )
    fills = api.get(f"/backtest/trades/{body['run_id']}", params={"limit": 1000}).json()
    listed = api.get("/backtest/results", params={"symbol": "pg", "limit": 1000}).json()

    assert body["symbols"] == ["KO", "PG", "JNJ"]
    assert {f["symbol"] for f in fills["trades"]} <= {"KO", "PG", "JNJ"}
    assert len({f["symbol"] for f in fills["trades"]}) >= 2
    assert body["run_id"] in {r["run_id"] for r in listed["results"]}
    assert all("PG" in r["symbols"] for r in listed["results"])


def test_results_are_listed_newest_first_and_filtered(api: TestClient) -> None:
    first = run(api, strategy={"name": "macd_trend", "params": {}})
    second = run(api, strategy={"name": "macd_trend", "params": {"fast": 8}})
    listed = api.get("/backtest/results", params={"strategy": "macd_trend"}).json()
    paged = api.get("/backtest/results", params={"strategy": "macd_trend", "limit": 1}).json()
    none = api.get("/backtest/results", params={"symbol": "XOM"}).json()

    ids = [r["run_id"] for r in listed["results"]]
    assert ids[:2] == [second["run_id"], first["run_id"]]
    assert {r["strategy"] for r in listed["results"]} == {"macd_trend"}
    assert listed["results"][0]["final_capital"] == second["metrics"]["final_capital"]
    assert paged["page"] == {
        "total": listed["page"]["total"],
        "limit": 1,
        "offset": 0,
        "returned": 1,
        "next_offset": 1,
    }
    assert none["results"] == [] and none["page"]["total"] == 0


def test_the_chart_is_a_png_of_the_asked_size(api: TestClient) -> None:
    import matplotlib.image

    body = run(api)
    png = api.get(f"/backtest/results/{body['run_id']}/chart.png", params={"width": 800})
    again = api.get(f"/backtest/results/{body['run_id']}/chart.png", params={"width": 800})

    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(io.BytesIO(png.content), format="png")
    assert pixels.shape[:2] == (600, 800)
    assert pixels[..., :3].std() > 0.05  # something is drawn
    assert again.content == png.content


def test_every_strategy_is_listed_with_its_parameter_schema(api: TestClient) -> None:
    listed = api.get("/backtest/strategies").json()["strategies"]
    by_name = {s["name"]: s for s in listed}

    assert set(by_name) == {
        "buy_and_hold",
        "sma_crossover",
        "mean_reversion",
        "macd_trend",
        "ml_ensemble",
    }
    assert by_name["sma_crossover"]["defaults"] == {"fast": 10, "slow": 30, "allow_short": False}
    assert by_name["sma_crossover"]["searchable"] == ["fast", "slow"]
    assert by_name["sma_crossover"]["parameters"]["properties"]["fast"]["minimum"] == 2
    assert by_name["ml_ensemble"]["available"] is False
    assert all(s["available"] for n, s in by_name.items() if n != "ml_ensemble")


@pytest.mark.parametrize(
    ("changes", "status", "code", "field"),
    [
        ({"symbol": "ZZZZ"}, 404, "symbol_not_found", "symbol"),
        ({"symbol": None, "symbols": ["KO", "ZZZZ"]}, 404, "symbol_not_found", "symbols[1]"),
        ({"start_date": "1850-01-01"}, 422, "validation_error", "start_date"),
        ({"end_date": "2004-01-01"}, 422, "validation_error", "end_date"),
        ({"start_date": "2030-01-01", "end_date": "2030-06-01"}, 404, "no_data", "start_date"),
        ({"strategy": {"name": "ml_ensemble"}}, 422, "strategy_unavailable", "strategy.name"),
        ({"strategy": {"name": "nope"}}, 422, "validation_error", "strategy.name"),
        ({"symbol": None}, 422, "validation_error", "symbols"),
        ({"symbols": ["KO"]}, 422, "validation_error", "symbols"),
        ({"symbol": None, "symbols": ["KO", "ko"]}, 422, "validation_error", "symbols"),
        (
            {"strategy": {"name": "sma_crossover", "params": {"fast": 30, "slow": 20}}},
            422,
            "validation_error",
            "strategy.params.slow",
        ),
        ({"commission_rate": 0.5}, 422, "validation_error", "commission_rate"),
        ({"equity_points": -1}, 422, "validation_error", "equity_points"),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(
    api: TestClient, changes: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    answer = api.post("/backtest/backtest", json={**GOOG_SMA, **changes})

    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem["code"] == code
    if field is not None:
        assert problem["field"] == field


def test_strategy_parameters_are_checked_by_the_strategy(api: TestClient) -> None:
    swapped = api.post(
        "/backtest/backtest",
        json={**GOOG_SMA, "strategy": {"name": "sma_crossover", "params": {"fast": 30}}},
    )
    unknown = api.post(
        "/backtest/backtest",
        json={**GOOG_SMA, "strategy": {"name": "sma_crossover", "params": {"fats": 5}}},
    )

    assert swapped.status_code == 422 and "slow" in swapped.json()["detail"]
    assert unknown.status_code == 422 and unknown.json()["field"].endswith("params.fats")


def test_unknown_runs_are_404_and_bad_ids_422(api: TestClient) -> None:
    missing = uuid.uuid4()
    for path in (f"/results/{missing}", f"/trades/{missing}", f"/results/{missing}/chart.png"):
        answer = api.get(f"/backtest{path}")
        assert answer.status_code == 404
        assert answer.json()["code"] == "run_not_found" and answer.json()["field"] == "run_id"
    assert api.get("/backtest/results/not-a-uuid").status_code == 422


def test_a_stop_loss_exit_is_recorded_as_such(api: TestClient) -> None:
    body = run(
        api,
        strategy={"name": "buy_and_hold"},
        stop_loss=0.05,
        start_date="2008-01-01",
        end_date="2008-12-31",
    )
    fills = api.get(f"/backtest/trades/{body['run_id']}").json()["trades"]

    stops = [f for f in fills if f["reason"] == "stop_loss"]
    # buy-and-hold wants to be long on every bar, so it re-enters after each stop (2008 fell)
    assert body["trades"]["exits"]["stop_loss"] == len(stops) > 1
    assert all(f["direction"] == "sell" and f["trade_return"] < 0 for f in stops)
    assert np.isfinite(body["metrics"]["max_drawdown"])
