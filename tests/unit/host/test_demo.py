"""`trading demo` (what `make demo` runs) works end to end on the embedded defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd


def test_demo_prints_prices_indicators_a_backtest_and_a_prediction(
    tmp_path: Path, csv_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.update(DATA_DIR=str(tmp_path), MARKET_PROVIDERS="csv")
    trading = Path(sys.executable).with_name("trading")
    env = {k: v for k, v in env.items() if not k.startswith(("TF_", "ABSL"))}
    done = subprocess.run(
        [str(trading), "demo", "--symbols", "AAPL,KO"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = done.stdout
    # quiet: none of TensorFlow's C++ start-up lines (the training worker's) on either stream
    for noise in ("cpu_feature_guard", "oneDNN", "absl::InitializeLog", "rebuild TensorFlow"):
        assert noise not in out and noise not in done.stderr
    last = pd.read_csv(csv_dir / "KO.csv").iloc[-1]
    assert f"{last['close']:.2f}" in out
    assert "sqlite+aiosqlite" in out
    assert "same request again: served from l1" in out
    assert "stale: " in out and " sessions old" in out  # the CSV data ends 2023-10-27
    assert (tmp_path / "trading.db").exists()
    # it ends with a backtest through the backtest service, beside buy-and-hold, and its chart
    tail = out[out.index("backtest :") :]
    assert "on AAPL 2013-10-28 .. 2023-10-27" in tail
    assert "buy & hold" in tail and "max drawdown" in tail and "Sharpe" in tail
    chart_line = next(line for line in tail.splitlines() if line.startswith("chart    : "))
    chart = Path(chart_line.removeprefix("chart    : "))
    assert chart.parent == tmp_path / "charts"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # then a small model trained over HTTP, its out-of-sample figures beside the baselines,
    # an honest verdict, and a call on the last bar with each member's weight
    ml = out[out.index("predictor:") :]
    assert "baseline: majority" in ml and "baseline: previous" in ml
    verdicts = [line for line in ml.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 2  # the test segment's, then the live record's
    assert all(
        v.split()[1] in ("beats", "does_not_beat", "insufficient_evidence") for v in verdicts
    )
    assert all("exact McNemar, n=" in v for v in verdicts)
    # the live record of the last ~20 bars is far below the minimum: no verdict
    assert verdicts[1].startswith("verdict: insufficient_evidence")
    assert "AAPL at 2023-10-27, next 1 bar:" in ml and "weight" in ml
    # the first /predict (it loads the version) is reported apart from the later calls' times
    assert re.search(r"^first /predict: \d+ ms \(loads the version", ml, re.MULTILINE)
    assert re.search(r"^/predict after it: p50 [\d.]+ ms, p99 [\d.]+ ms over \d+ calls", ml, re.M)
    assert "server time" not in ml
