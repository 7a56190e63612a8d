"""TensorFlow stays out of processes that serve: only training workers import it.

Embedded mode starts every service in the gateway process: building the predictor app,
serving its cheap routes, even accepting a training job (it trains in a worker process)
must import neither TensorFlow nor Keras nor XGBoost, and predicting with a trained LSTM
imports neither TensorFlow nor Keras (the LSTM runs in numpy). Each check runs in a fresh
interpreter, so nothing imported by other tests hides a leak.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

APP_SCRIPT = """
import json, sys, time, uuid
from fastapi.testclient import TestClient
from services.predictor.app import create_app
from services.predictor.settings import PredictorSettings

app = create_app(PredictorSettings(
    data_dir=sys.argv[1], database_url=None, redis_url=None,
    market_url="http://127.0.0.1:9", dask_scheduler_address=None,
))
codes = {}
with TestClient(app) as c:
    codes["health"] = c.get("/health").status_code
    codes["model_info"] = c.get("/model_info").status_code
    codes["weights"] = c.get("/weights").status_code
    codes["performance"] = c.get("/performance").status_code
    codes["predict"] = c.post("/predict", json={"symbol": "AAPL"}).status_code
    codes["rollback"] = c.post("/rollback", json={"version": "1.0.0"}).status_code
    codes["update_online"] = c.post("/update_online", json={}).status_code
    codes["job"] = c.get(f"/jobs/{uuid.uuid4()}").status_code
    answer = c.post("/train", json={"symbols": ["AAPL"], "lstm": {"size": "small"}})
    codes["train"] = answer.status_code
    for _ in range(200):
        status = c.get(answer.headers["location"]).json()
        if status["status"] == "failed":
            break
        time.sleep(0.05)
    codes["train_job"] = status["error"]["code"]
    codes["tensorflow_loaded"] = c.get("/health").json()["tensorflow_loaded"]
heavy = [m for m in ("tensorflow", "keras", "xgboost") if m in sys.modules]
print(json.dumps({"codes": codes, "heavy": heavy}))
"""

GATEWAY_SCRIPT = """
import json, sys
from pathlib import Path
import anyio
from fastmcp import Client
from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from services.predictor.app import create_app as predictor_app
from services.predictor.settings import PredictorSettings
from trading.openapi import OPENAPI_DIR

tmp = Path(sys.argv[1])
specs = tmp / "openapi"
specs.mkdir()
for name in ("market", "predictor"):
    (specs / f"{name}.json").write_text((OPENAPI_DIR / f"{name}.json").read_text())
db = f"sqlite+aiosqlite:///{tmp / 'trading.db'}"
factories = {
    "market": lambda: market_app(MarketSettings(
        data_dir=tmp, database_url=db, market_data_dir=SHARED_CSV_DIR, market_providers=["csv"])),
    "predictor": lambda: predictor_app(PredictorSettings(
        data_dir=tmp, database_url=db, redis_url=None, dask_scheduler_address=None)),
}

async def go():
    gateway = build_gateway(GatewaySettings(spec_dir=specs), app_factories=factories)
    async with Client(gateway) as client:
        names = {t.name for t in await client.list_tools()}
        info = await client.call_tool(
            "predictor_get_model_info", {"model": "default"}, raise_on_error=False)
        price = await client.call_tool("market_get_price", {"symbol": "AAPL"})
    return sorted(n for n in names if n.startswith("predictor_")), info, price

tools, info, price = anyio.run(go)
heavy = [m for m in ("tensorflow", "keras", "xgboost") if m in sys.modules]
print(json.dumps({"tools": tools, "info_error": info.is_error,
                  "info": info.content[0].text, "price": price.structured_content["symbol"],
                  "heavy": heavy}))
"""


PREDICT_SCRIPT = """
import json, os, sys, time
from pathlib import Path
from fastapi.testclient import TestClient
from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from services.predictor.app import create_app as predictor_app
from services.predictor.settings import PredictorSettings
from trading.host import build_platform_app

tmp = Path(sys.argv[1])
db = f"sqlite+aiosqlite:///{tmp / 'trading.db'}"
apps = {
    "market": market_app(MarketSettings(data_dir=tmp, database_url=db, redis_url=None,
        market_data_dir=SHARED_CSV_DIR, market_providers=["csv"])),
    "predictor": predictor_app(PredictorSettings(data_dir=tmp, database_url=db,
        redis_url=None, dask_scheduler_address=None, job_progress_interval_s=0.05)),
}
body = {"symbols": ["AAPL"], "start_date": "2016-01-01", "end_date": "2019-12-31",
        "models": ["lstm", "xgboost"], "lstm": {"size": "small", "epochs": 2}}
with TestClient(build_platform_app(apps)) as c:
    answer = c.post("/predictor/train", json=body)
    assert answer.status_code == 202, answer.text
    for _ in range(3000):
        status = c.get(answer.headers["location"]).json()
        if status["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert status["status"] == "succeeded", status
    predicted = c.post("/predictor/predict", json={"symbol": "AAPL", "as_of": "2020-03-02"})
    assert predicted.status_code == 200, predicted.text
    members = sorted(predicted.json()["members"])
    ranged = c.post("/predictor/predict_range", json={
        "symbol": "AAPL", "start": "2020-02-03", "end": "2020-03-31"})
    health = c.get("/predictor/health").json()
heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(json.dumps({"members": members, "range": ranged.status_code,
                  "tensorflow_loaded": health["tensorflow_loaded"], "heavy": heavy}))
"""


def run(script: str, tmp_path: Path) -> dict[str, object]:
    """Run script in a fresh interpreter with tmp_path as its argument; return its JSON."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_app_and_its_cheap_routes_import_no_tensorflow(tmp_path: Path) -> None:
    result = run(APP_SCRIPT, tmp_path)
    assert result["codes"] == {
        "health": 200,
        "model_info": 404,
        "weights": 404,
        "performance": 404,
        "predict": 404,
        "rollback": 404,
        "update_online": 404,
        "job": 404,
        "train": 202,
        "train_job": "service_unavailable",  # the market is unreachable: the job fails
        "tensorflow_loaded": False,
    }
    assert result["heavy"] == []


def test_the_embedded_gateway_serves_predictor_tools_without_tensorflow(tmp_path: Path) -> None:
    result = run(GATEWAY_SCRIPT, tmp_path)
    assert {
        "predictor_train_models",
        "predictor_predict",
        "predictor_get_performance",
        "predictor_get_model_info",
        "predictor_get_weights",
        "predictor_rollback_model",
        "predictor_update_online",
    } <= set(result["tools"])  # type: ignore[arg-type]
    assert result["info_error"] is True and "model_not_found" in str(result["info"])
    assert result["price"] == "AAPL"
    assert result["heavy"] == []


def test_predicting_with_a_trained_lstm_imports_no_tensorflow(tmp_path: Path) -> None:
    # The version is trained in a job worker (TensorFlow there); this process only predicts.
    result = run(PREDICT_SCRIPT, tmp_path)
    assert result == {
        "members": ["lstm", "xgboost"],
        "range": 200,
        "tensorflow_loaded": False,
        "heavy": [],
    }
