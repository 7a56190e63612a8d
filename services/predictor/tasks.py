"""Job tasks of the predictor: what runs in a worker process (it holds the GIL: TensorFlow).

Module-level functions of an importable module, as the job contract asks (worker processes
and Dask workers import them); arguments and results are plain numpy arrays, dicts and
bytes. Progress goes through `shared.jobs.task_report` (per LSTM epoch, per ten trees) and
cancellation through `task_cancelled`, which the ML core's hooks take as they are.
TensorFlow is imported here, in the worker, never in the service process that submits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.predictor.ml.types import FloatArray, IntArray
from shared.jobs import task_cancelled, task_report

# (symbol, features bars x 50, closes, bar times as int64 ns)
SeriesTuple = tuple[str, FloatArray, FloatArray, IntArray]


def _series(items: Sequence[SeriesTuple]) -> list[Any]:
    from services.predictor.ml.training import SeriesData

    return [
        SeriesData(symbol, features, close, np.asarray(times, np.int64).view("datetime64[ns]"))
        for symbol, features, close, times in items
    ]


def train_task(
    series: Sequence[SeriesTuple], feature_names: Sequence[str], config: Mapping[str, Any]
) -> dict[str, Any]:
    """Train an ensemble; return its artifacts (bytes), metrics, info and ensemble state."""
    from services.predictor.ml.training import TrainConfig, train_ensemble

    start = time.perf_counter()
    model = train_ensemble(
        _series(series),
        TrainConfig.from_dict(config),
        feature_names=list(feature_names),
        report=task_report,
        cancel=task_cancelled,
    )
    return {
        "artifacts": model.to_artifacts(),
        "metrics": model.metrics,
        "info": model.info,
        "ensemble": model.ensemble.to_dict(),
        "seconds": time.perf_counter() - start,
    }


def member_sharpes(
    model: Any, series: Sequence[Any], rows: Mapping[str, IntArray]
) -> dict[str, float]:
    """Return each member's Sharpe ratio of trading its own calls on rows (realised bars)."""
    from services.predictor.ml.labels import forward_returns
    from services.predictor.ml.metrics import calls, sharpe_of_calls

    horizon = model.config.horizon
    probs: dict[str, list[FloatArray]] = {name: [] for name in model.members}
    returns: list[FloatArray] = []
    for s in series:
        idx = np.asarray(rows.get(s.symbol, []), dtype=np.int64)
        if idx.size == 0:
            continue
        for name, p in model.member_probabilities(s.features, idx).items():
            probs[name].append(p)
        returns.append(forward_returns(s.close, horizon)[idx])
    if not returns:
        return {name: 0.0 for name in model.members}
    r = np.concatenate(returns)
    return {
        name: sharpe_of_calls(calls(np.concatenate(parts)), r, horizon)
        for name, parts in probs.items()
    }


def update_task(
    artifacts: Mapping[str, bytes],
    series: Sequence[SeriesTuple],
    recent: Mapping[str, Sequence[int]],
    history: Mapping[str, Sequence[int]],
    validation: Mapping[str, Sequence[int]],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """Fine-tune a model on recent outcomes plus history; validate; return the verdict.

    recent, history and validation map a symbol to bar times (int64 ns). The candidate's
    ensemble weights become a softmax over each member's Sharpe ratio on the recent rows.
    """
    from services.predictor.ml.online import rows_at, update_model
    from services.predictor.ml.training import EnsembleModel

    model = EnsembleModel.from_artifacts(artifacts, trainable=True)
    data = _series(series)

    def rows(times: Mapping[str, Sequence[int]]) -> dict[str, IntArray]:
        out = {}
        for s in data:
            stamps = np.asarray(times.get(s.symbol, []), dtype=np.int64).view("datetime64[ns]")
            out[s.symbol] = rows_at(s, stamps)
        return out

    recent_rows, history_rows, val_rows = rows(recent), rows(history), rows(validation)
    usable_recent = {s.symbol: _complete(model, s, recent_rows[s.symbol]) for s in data}
    sharpes = member_sharpes(model, data, usable_recent)
    train_rows = {
        sym: np.union1d(recent_rows[sym], history_rows[sym]).astype(np.int64) for sym in recent_rows
    }
    result = update_model(
        model,
        data,
        train_rows,
        val_rows,
        epochs=int(options["epochs"]),
        trees=int(options["trees"]),
        tolerance=float(options["tolerance"]),
        metric=str(options["metric"]),
        sharpes=sharpes,
        report=task_report,
        cancel=task_cancelled,
    )
    candidate = result.model if result.accepted else None
    return {
        "accepted": result.accepted,
        "reason": result.reason,
        "active": result.active.get("ensemble"),
        "candidate": result.candidate.get("ensemble"),
        "validation_rows": int(result.candidate.get("rows", 0)),
        "train_rows": int(sum(r.size for r in train_rows.values())),
        "sharpes": sharpes,
        "weights": _weights(model, sharpes),
        "artifacts": candidate.to_artifacts() if candidate is not None else None,
        "metrics": candidate.metrics if candidate is not None else None,
        "info": candidate.info if candidate is not None else None,
        "ensemble": candidate.ensemble.to_dict() if candidate is not None else None,
    }


def _complete(model: Any, series: Any, rows: IntArray) -> IntArray:
    """Return the rows whose feature window is complete (the member can predict them)."""
    ctx = model.config.context
    ok = np.isfinite(series.features).all(axis=1)
    gaps = np.concatenate([[0], np.cumsum(~ok)])
    keep = rows[(rows >= ctx - 1) & (rows < series.features.shape[0])]
    keep = keep[gaps[keep + 1] - gaps[keep + 1 - ctx] == 0]
    return keep[keep + model.config.horizon < series.close.size]  # outcome known


def _weights(model: Any, sharpes: Mapping[str, float]) -> dict[str, float]:
    """Return the weights the candidate gets from the Sharpe ratios."""
    from services.predictor.ml.ensemble import AdaptiveEnsemble

    ensemble = AdaptiveEnsemble.from_dict(model.ensemble.to_dict())
    return ensemble.update_weights(sharpes)
