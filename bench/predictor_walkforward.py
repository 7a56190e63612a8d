"""ML walk-forward for bench/predictor.py: the ensemble's out-of-sample hit rate, window by window.

Over the last `years` of one symbol's daily bars (features computed on the full history, so
each value equals what the market service serves): rolling windows of `train_bars` in
sample and `test_bars` out of sample, cut as the backtest's walk-forward cuts them
((N - train - test) // test + 1 windows). Every `retrain_every` windows the ensemble (LSTM
+ XGBoost) is trained on that window's in-sample bars only, with the last 20% of them as
its validation split (labels that reach past the in-sample end are purged); in between the
last model keeps predicting. Out of sample each bar's call is scored against its realised
label, beside the majority class of the training labels and yesterday's direction.

This is the predictor side of the seed's data flow steps 8-11, run directly on the ML core;
the backtest service's `ml_ensemble` walk-forward (trading the calls, with costs) is the
backtest engineer's and goes through the predictor's HTTP contract.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from services.market.settings import SHARED_CSV_DIR
from services.predictor.ml import metrics as m
from services.predictor.ml.labels import make_labels
from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.training import SeriesData, TrainConfig, train_ensemble
from shared.quant.features import FEATURE_NAMES, compute_features

BARS_PER_YEAR = 252
SMALL = LSTMConfig(
    seq_len=20, lstm_units=(16, 16, 8), attention_heads=2, key_dim=8, dense_units=(16, 8)
)


def walk_forward_bench(
    symbol: str,
    *,
    years: int,
    train_bars: int,
    test_bars: int,
    retrain_every: int,
    lstm: str,
    seed: int,
) -> list[str]:
    """Run the walk-forward and return its report lines."""
    frame = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", dtype={"date": str})
    _, features = compute_features(
        frame["open"], frame["high"], frame["low"], frame["close"], frame["volume"], frame["date"]
    )
    close = frame["close"].to_numpy(np.float64)
    dates = pd.to_datetime(frame["date"]).to_numpy()
    config = TrainConfig(
        validation_fraction=0.2,
        test_fraction=0.0,
        seed=seed,
        lstm=LSTMConfig(epochs=30) if lstm == "seed" else replace(SMALL, epochs=30),
    )
    labels = make_labels(close, config.horizon, config.band, config.vol_window)
    first = len(close) - years * BARS_PER_YEAR
    n = len(close) - first
    windows = (n - train_bars - test_bars) // test_bars + 1
    ctx = config.context
    lines = [
        f"{symbol}, last {years} years ({n} bars, {pd.Timestamp(dates[first]).date()}.."
        f"{pd.Timestamp(dates[-1]).date()}): {windows} windows of {train_bars} in-sample and "
        f"{test_bars} out-of-sample bars; {lstm} LSTM + XGBoost retrained every "
        f"{retrain_every} windows",
        f"  {'window':<8}{'out of sample':<26}{'trained':>9}{'model':>9}{'majority':>10}"
        f"{'previous':>10}{'bars':>6}",
    ]
    start = time.perf_counter()
    model = None
    train_s = 0.0
    pooled: dict[str, list[np.ndarray]] = {"model": [], "majority": [], "previous": []}
    for k in range(windows):
        lo = first + k * test_bars
        hi = lo + train_bars
        test = np.arange(hi, min(hi + test_bars, len(close)))
        trained = ""
        if model is None or k % retrain_every == 0:
            part = slice(lo - (ctx - 1), hi)  # the first in-sample row gets a full window
            series = SeriesData(symbol, features[part], close[part], dates[part])
            t0 = time.perf_counter()
            model = train_ensemble(series, config, feature_names=FEATURE_NAMES)
            train_s += time.perf_counter() - t0
            trained = f"{time.perf_counter() - t0:.0f} s"
        test = test[np.isfinite(labels[test])]
        y = labels[test].astype(np.int64)
        calls = model.predict(features, test).calls
        majority = np.full(y.size, int(model.info["majority_class"]))
        previous = m.previous_label_calls(labels, test, config.horizon)
        hits = {
            "model": calls == y,
            "majority": majority == y,
            "previous": previous == y,
        }
        for key, value in hits.items():
            pooled[key].append(value)
        span = f"{pd.Timestamp(dates[test[0]]).date()}..{pd.Timestamp(dates[test[-1]]).date()}"
        lines.append(
            f"  {k + 1:<8}{span:<26}{trained:>9}{hits['model'].mean():>9.3f}"
            f"{hits['majority'].mean():>10.3f}{hits['previous'].mean():>10.3f}{y.size:>6}"
        )
    wall = time.perf_counter() - start
    overall = {key: float(np.concatenate(v).mean()) for key, v in pooled.items()}
    beats = all(overall["model"] > overall[b] for b in ("majority", "previous"))
    total = int(sum(v.size for v in pooled["model"]))
    wins = sum(
        1
        for mo, ma, pr in zip(pooled["model"], pooled["majority"], pooled["previous"], strict=True)
        if mo.mean() > max(ma.mean(), pr.mean())
    )
    lines.append(
        f"  overall hit rate on {total} out-of-sample bars: model {overall['model']:.3f}, "
        f"majority {overall['majority']:.3f}, previous {overall['previous']:.3f} -> the model "
        + ("beats both baselines" if beats else "does NOT beat the baselines")
        + f"; it beat both in {wins} of {windows} windows"
    )
    lines.append(f"  wall time {wall:.1f} s (training {train_s:.1f} s)")
    return lines
