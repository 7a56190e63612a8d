"""The demo's predictor part, run against a real co-hosted market + predictor over HTTP."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.market.app import create_app as market_app
from services.predictor.app import create_app as predictor_app
from services.predictor.demo import run_demo
from services.predictor.settings import PredictorSettings
from shared.http import unregister_local_app
from tests.conftest import market_settings
from trading.host import build_platform_app


def test_the_demo_trains_predicts_and_shows_the_baselines(tmp_path: Path, csv_dir: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'trading.db'}"
    market = market_app(market_settings(tmp_path, csv_dir, database_url=db))
    predictor = predictor_app(
        PredictorSettings(
            data_dir=tmp_path, database_url=db, redis_url=None, dask_scheduler_address=None
        )
    )
    lines: list[str] = []
    try:
        app = build_platform_app({"market": market, "predictor": predictor})
        with TestClient(app, base_url="http://testserver/predictor") as http:
            out = run_demo(
                http, symbol="MSFT", days=5, epochs=1, start_date="2021-01-01", echo=lines.append
            )
    finally:
        unregister_local_app("market", market)
        unregister_local_app("predictor", predictor)

    text = "\n".join(lines)
    assert out["trained"]["version"] == "1.0.0" and out["trained"]["models"] == ["lstm", "xgboost"]
    assert "lstm: epoch 1/1" in text and "baseline: majority" in text
    assert out["trained"]["verdict"] in text
    assert out["prediction"]["model"] == "demo" and out["prediction"]["symbol"] == "MSFT"
    assert f"MSFT at {out['prediction']['as_of'][:10]}" in text
    performance = out["performance"]
    assert performance["realised"] >= 4 and performance["pending"] == 1  # the last bar
    assert performance["verdict"] in text
    assert f"verdict: {out['trained']['baseline_test']['verdict']} (exact McNemar" in text
    assert "verdict: insufficient_evidence (exact McNemar, n=" in text  # 5 live calls
