"""Predictor benchmark: model training on 5 years of real daily bars, and the honest verdict.

Run: `.venv/bin/python bench/predictor.py [--symbol AAPL] [--years 5]`. Prints, in one run:
- feature computation time for the symbol's whole history (50 features per bar);
- XGBoost training (the seed's 100 trees, one thread) on 5 years daily: target under 5 s;
- the full-size LSTM with attention (60 x 50 inputs, 308,515 parameters, early stopping)
  on the same 5 years: target under 3 minutes on 2 cores (the seed's 5);
- out-of-sample (test segment) and validation metrics of each member and of the ensemble
  beside the majority-class and previous-direction baselines, and whether each beats them.
  The figures are printed whatever they are: a model that does not beat the baselines says so.
- `/predict` latency over HTTP (`trading serve` in its own process, the full-size model
  stored in the registry): the first call (model load), cached calls (30 s cache), uncached
  ones (a new `as_of` each: its features sliced from the year's block the predictor holds,
  then inference) and uncached ones in years not fetched yet (the market computes the
  year's features and sends them first), p50/p99; targets under 10 ms p50 and 30 ms p99
  (the seed's 100 ms);
- the gateway's cold start (`trading mcp` over stdio, every service embedded): to its first
  tool answer with and without a predictor request, and its memory after each: the serving
  process never imports TensorFlow (targets: first prediction < 2 s, RSS < 700 MB);
- a light process (`--only process`): a training through `trading serve` (TensorFlow in the
  job worker only), the server's first prediction and RSS, and the process tree once the
  worker has been idle for `--idle-s` (`JOB_PROCESS_IDLE_S`; target < 900 MB);
- an ML walk-forward over the last 5 years of one symbol (`bench/predictor_walkforward.py`):
  rolling windows, the ensemble trained in sample only (every `--wf-retrain-every` windows),
  out-of-sample hit rate per window and overall beside the baselines, and its wall time;
- the same walk-forward as users run it (`POST /backtest/walk_forward` with `ml_ensemble`
  against `trading serve`): each window's version trained by the predictor over HTTP, its
  calls traded with costs; wall time, hit rates beside the baselines, and the stitched
  out-of-sample return beside buy-and-hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.market.settings import SHARED_CSV_DIR
from services.predictor.ml import LSTMConfig, SeriesData, TrainConfig, train_ensemble
from services.predictor.ml.labels import make_labels
from shared.quant.features import FEATURE_NAMES, compute_features

BARS_PER_YEAR = 252
METRICS = ("accuracy", "f1", "ece", "brier", "sharpe")


def load_series(symbol: str, years: int) -> tuple[SeriesData, float]:
    """Return the last `years` of a symbol's daily bars as model input, and the feature time."""
    frame = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", dtype={"date": str})
    columns = [frame[k] for k in ("open", "high", "low", "close", "volume", "date")]
    compute_features(*columns)  # the first call loads the numba kernels from their cache
    t0 = time.perf_counter()
    _, matrix = compute_features(*columns)
    feature_s = time.perf_counter() - t0
    keep = slice(len(frame) - years * BARS_PER_YEAR, None)  # full-history feature values
    series = SeriesData(
        symbol,
        matrix[keep],
        frame["close"].to_numpy(np.float64)[keep],
        pd.to_datetime(frame["date"]).to_numpy()[keep],
    )
    return series, feature_s


def timed_training(series: SeriesData, config: TrainConfig) -> tuple[Any, dict[str, float]]:
    """Train and return the model with the wall time of each member (from its reports)."""
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def report(done: float, total: float, message: str) -> None:
        if message.endswith(": trained"):
            marks[message.split(":")[0]] = time.perf_counter()

    model = train_ensemble(series, config, feature_names=FEATURE_NAMES, report=report)
    times, previous = {}, start
    for name in config.models:
        times[name] = marks[name] - previous
        previous = marks[name]
    times["total"] = time.perf_counter() - start
    return model, times


def format_segment(title: str, figures: dict[str, Any]) -> list[str]:
    """Return the lines of one segment's comparison table."""
    lines = [f"{title} ({figures['rows']} rows)"]
    lines.append(f"  {'':<20}" + "".join(f"{k:>10}" for k in METRICS) + "   beats baselines")
    members = [k for k in ("lstm", "xgboost", "ensemble") if k in figures]
    rows: list[tuple[str, Any]] = [(k, figures[k]) for k in members]
    rows += [(f"baseline {k}", v) for k, v in figures["baselines"].items()]
    for name, values in rows:
        verdict = figures["beats_baselines"].get(name, "")
        cells = "".join(f"{values[k]:>10.4f}" for k in METRICS)
        lines.append(f"  {name:<20}{cells}   {verdict}")
    return lines


def training_bench(symbol: str, years: int, seed: int, epochs: int) -> tuple[list[str], Any]:
    """Run the training benchmark; return its report lines and the full-size model."""
    series, feature_s = load_series(symbol, years)
    lines = [
        f"{symbol}: {years} years daily = {series.close.shape[0]} bars x "
        f"{series.features.shape[1]} features (features for the whole history: "
        f"{feature_s * 1000:.1f} ms)"
    ]
    t0 = time.perf_counter()
    import xgboost  # noqa: F401  (its import is not training: ~2 s here, once per process)

    make_labels(series.close, 1, 0.5, 21)  # the label kernel loads from numba's cache
    lines.append(
        f"first-use costs, not counted below (import xgboost, numba labels): "
        f"{time.perf_counter() - t0:.2f} s"
    )
    xgb_model, xgb_times = timed_training(series, TrainConfig(models=("xgboost",), seed=seed))
    lines.append(
        f"XGBoost (100 trees, depth 6, 1 thread), {xgb_model.info['rows']['train']} training "
        f"rows: {xgb_times['xgboost']:.2f} s  [target < 5 s]"
    )
    config = TrainConfig(seed=seed, lstm=LSTMConfig(epochs=epochs))
    model, times = timed_training(series, config)
    info = model.info["lstm"]
    lines.append(
        f"LSTM with attention ({info['parameters']:,} parameters, 60 x 50 windows, "
        f"{info['epochs_run']} of {epochs} epochs before early stopping): "
        f"{times['lstm']:.1f} s  [target < 180 s]"
    )
    lines.append(f"ensemble training in all (LSTM + XGBoost + evaluation): {times['total']:.1f} s")
    lines.append(f"train class counts (down, neutral, up): {model.info['train_class_counts']}")
    for seg in ("test", "validation"):
        lines += format_segment(f"{seg} segment, label horizon 1 bar", model.metrics[seg])
    return lines, model


def main() -> None:
    """Parse arguments and print the benchmark."""
    from bench.predictor_service import (
        cold_start_bench,
        http_bench,
        process_bench,
        service_walk_forward_bench,
        store_model,
    )
    from bench.predictor_walkforward import walk_forward_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("-n", type=int, default=300, help="timed /predict calls per kind")
    parser.add_argument("--wf-train-bars", type=int, default=504)
    parser.add_argument("--wf-test-bars", type=int, default=63)
    parser.add_argument("--wf-retrain-every", type=int, default=3)
    parser.add_argument("--wf-lstm", choices=("seed", "small"), default="seed")
    parser.add_argument(
        "--idle-s", type=float, default=20.0, help="JOB_PROCESS_IDLE_S of 'process'"
    )
    parser.add_argument("--process-lstm", choices=("seed", "small"), default="small")
    parser.add_argument("--process-epochs", type=int, default=5)
    parser.add_argument(
        "--only",
        choices=("training", "http", "cold", "walkforward", "service-walkforward", "process"),
        action="append",
    )
    args = parser.parse_args()
    every = ("training", "http", "cold", "walkforward", "service-walkforward", "process")
    sections = set(args.only or every)

    def show(lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)

    model = None
    if sections & {"training", "http", "cold"}:
        print("== training (in process) ==", flush=True)
        lines, model = training_bench(args.symbol, args.years, args.seed, args.epochs)
        show(lines)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if model is not None:
            store_model(data_dir, model, args.symbol)
        if "http" in sections and model is not None:
            print("\n== /predict over HTTP (market + predictor under uvicorn) ==", flush=True)
            show(http_bench(data_dir, args.symbol, args.n))
        if "cold" in sections and model is not None:
            print("\n== gateway cold start (trading mcp over stdio) ==", flush=True)
            show(cold_start_bench(data_dir, args.symbol))
    if "process" in sections:
        print("\n== a light process: training in a worker, predicting without TF ==", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            show(
                process_bench(
                    Path(tmp),
                    args.symbol,
                    idle_s=args.idle_s,
                    lstm=args.process_lstm,
                    epochs=args.process_epochs,
                )
            )
            print("\n== gateway cold start on that version (trading mcp over stdio) ==")
            show(cold_start_bench(Path(tmp), args.symbol))
    if "walkforward" in sections:
        print("\n== ML walk-forward ==", flush=True)
        show(
            walk_forward_bench(
                args.symbol,
                years=args.years,
                train_bars=args.wf_train_bars,
                test_bars=args.wf_test_bars,
                retrain_every=args.wf_retrain_every,
                lstm=args.wf_lstm,
                seed=args.seed,
            )
        )
    if "service-walkforward" in sections:
        print("\n== ML walk-forward through the services (POST /backtest/walk_forward) ==")
        with tempfile.TemporaryDirectory() as tmp:
            show(
                service_walk_forward_bench(
                    Path(tmp),
                    args.symbol,
                    years=args.years,
                    train_bars=args.wf_train_bars,
                    test_bars=args.wf_test_bars,
                    retrain_every=args.wf_retrain_every,
                    lstm=args.wf_lstm,
                    epochs=30,
                    seed=args.seed,
                )
            )


if __name__ == "__main__":
    main()
