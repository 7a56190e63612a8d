"""numba kernels are compiled (or loaded from their disk cache) as a service starts.

Each check starts the app in a fresh interpreter, makes no request, waits for the warm-up
the lifespan started, and finds the kernels that requests run already compiled: the first
request no longer pays for the compile (9.9 s for a fresh install's first backtest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A fresh install compiles here (177 s on this busy 2-core machine): the limit is the
# compile's, not a speed claim.
COMPILE_LIMIT_S = 1200

SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from services.{service}.app import create_app
from services.{service}.settings import {settings}

app = create_app({settings}(data_dir=sys.argv[1], database_url=None, redis_url=None,
                            dask_scheduler_address=None))
with TestClient(app):
    seconds = app.state.kernels.result(timeout=1100)  # no request made
    {probe}
print(json.dumps({{"seconds": seconds, "compiled": compiled}}))
"""

BACKTEST_PROBE = """from services.backtest.engine import core, montecarlo, stats
    kernels = {"simulate": core.simulate_nb, "cscv": stats.cscv_logits_nb,
               "bootstrap": stats.bootstrap_means_nb, "trades": montecarlo.bootstrap_trades_nb,
               "blocks": montecarlo.block_bootstrap_nb}
    compiled = sorted(k for k, f in kernels.items() if f.signatures)"""

PREDICTOR_PROBE = """from services.predictor.ml import lstm_inference as li
    kernels = {"affine": li._affine_nb, "lstm": li._lstm_nb, "attend": li._attend_nb}
    compiled = sorted(k for k, f in kernels.items() if f.signatures)"""


def run(service: str, settings: str, probe: str, tmp_path: Path) -> dict[str, object]:
    script = SCRIPT.format(service=service, settings=settings, probe=probe)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=COMPILE_LIMIT_S,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(COMPILE_LIMIT_S + 60)
def test_the_backtest_service_compiles_its_engine_at_start(tmp_path: Path) -> None:
    result = run("backtest", "BacktestSettings", BACKTEST_PROBE, tmp_path)
    assert result["compiled"] == ["blocks", "bootstrap", "cscv", "simulate", "trades"]


@pytest.mark.timeout(COMPILE_LIMIT_S + 60)
def test_the_predictor_compiles_its_lstm_forward_pass_at_start(tmp_path: Path) -> None:
    result = run("predictor", "PredictorSettings", PREDICTOR_PROBE, tmp_path)
    assert result["compiled"] == ["affine", "attend", "lstm"]
