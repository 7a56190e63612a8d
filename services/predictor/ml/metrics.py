"""Classification, calibration and trading metrics of direction calls, and the naive baselines.

Classes are 0 down, 1 neutral, 2 up. A call trades: long on `up`, short on `down`, flat on
`neutral`, for the label's horizon; the Sharpe ratio of those trades is annualised with
``periods_per_year / horizon`` periods. Precision, recall and F1 are macro averages over the
three classes, a class never predicted counting 0 (scikit-learn's ``zero_division=0``).

The baselines a model must beat out of sample: ``majority`` always calls the most frequent
class of the training labels; ``previous`` calls the last realised label, i.e. the label of
bar t - horizon, whose outcome is known at bar t ("yesterday's direction" for horizon 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.predictor.ml.types import N_CLASSES, NEUTRAL, FloatArray, IntArray

PERIODS_PER_YEAR = 252


def _classes(y: Any, name: str) -> IntArray:
    """Cast class indices to int64 and check they are 0, 1 or 2."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.isin(arr, np.arange(N_CLASSES)).all():
        raise ValueError(f"{name} must hold class indices 0..{N_CLASSES - 1}")
    return arr.astype(np.int64)


def _proba(p: Any, n: int) -> FloatArray:
    """Cast probabilities to an (n, 3) float64 array."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.shape != (n, N_CLASSES):
        raise ValueError(f"probabilities must have shape ({n}, {N_CLASSES}), got {arr.shape}")
    return arr


def calls(proba: Any) -> IntArray:
    """Return the called class of each row: the most probable (first on ties)."""
    arr = np.asarray(proba, dtype=np.float64)
    return np.argmax(arr, axis=1).astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Return the share of correct calls (0 for no rows)."""
    t, p = _classes(y_true, "y_true"), _classes(y_pred, "y_pred")
    return float((t == p).mean()) if t.size else 0.0


def precision_recall_f1(y_true: Any, y_pred: Any) -> tuple[float, float, float]:
    """Return macro precision, recall and F1 over the three classes (0 where undefined)."""
    t, p = _classes(y_true, "y_true"), _classes(y_pred, "y_pred")
    precision, recall, f1 = [], [], []
    for k in range(N_CLASSES):
        tp = float(np.sum((p == k) & (t == k)))
        predicted = float(np.sum(p == k))
        actual = float(np.sum(t == k))
        pk = tp / predicted if predicted else 0.0
        rk = tp / actual if actual else 0.0
        precision.append(pk)
        recall.append(rk)
        f1.append(2.0 * pk * rk / (pk + rk) if pk + rk else 0.0)
    return float(np.mean(precision)), float(np.mean(recall)), float(np.mean(f1))


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 10) -> float:
    """Return the ECE: bin rows by confidence, average |accuracy - confidence| by bin size."""
    t = _classes(y_true, "y_true")
    p = _proba(proba, t.size)
    if t.size == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == t).astype(np.float64)
    # bins (0, 1/B], (1/B, 2/B], ...; a confidence of exactly 0 joins the first
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def brier_score(y_true: Any, proba: Any) -> float:
    """Return the multi-class Brier score: mean over rows of sum_k (p_k - [y = k])^2."""
    t = _classes(y_true, "y_true")
    p = _proba(proba, t.size)
    if t.size == 0:
        return 0.0
    onehot = np.eye(N_CLASSES)[t]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def log_loss(y_true: Any, proba: Any, eps: float = 1e-15) -> float:
    """Return the mean negative log-probability of the realised class (clipped at eps)."""
    t = _classes(y_true, "y_true")
    p = _proba(proba, t.size)
    if t.size == 0:
        return 0.0
    return float(-np.mean(np.log(np.clip(p[np.arange(t.size), t], eps, 1.0))))


def class_frequencies(train_labels: Any) -> FloatArray:
    """Return the training labels' class frequencies (the climatology forecast); 1/3 each
    without labels."""
    arr = np.asarray(train_labels, dtype=np.float64)
    t = _classes(arr[np.isfinite(arr)], "train_labels")
    if t.size == 0:
        return np.full(N_CLASSES, 1.0 / N_CLASSES)
    counts = np.bincount(t, minlength=N_CLASSES).astype(np.float64)
    return np.asarray(counts / counts.sum(), dtype=np.float64)


def climatology(frequencies: Any, n: int) -> FloatArray:
    """Return the class-frequency forecast on n rows (the same probabilities on each)."""
    f = np.asarray(frequencies, dtype=np.float64).reshape(1, N_CLASSES)
    return np.asarray(np.repeat(f, n, axis=0), dtype=np.float64)


def call_returns(y_pred: Any, returns: Any) -> FloatArray:
    """Return the return of trading each call: +r for up, -r for down, 0 for neutral."""
    p = _classes(y_pred, "y_pred")
    r = np.asarray(returns, dtype=np.float64)
    if r.shape != p.shape:
        raise ValueError(f"returns must have one value per call ({p.size}), got {r.shape}")
    return (p.astype(np.float64) - NEUTRAL) * r


def sharpe_ratio(pnl: Any, horizon: int = 1, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """Return the annualised Sharpe ratio of per-trade returns (0 when undefined)."""
    x = np.asarray(pnl, dtype=np.float64)
    if x.size < 2:
        return 0.0
    sd = float(x.std(ddof=1))
    if not math.isfinite(sd) or sd <= 1e-15:
        return 0.0
    return float(x.mean() / sd * math.sqrt(periods_per_year / horizon))


def sharpe_of_calls(
    y_pred: Any, returns: Any, horizon: int = 1, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """Return the annualised Sharpe ratio of trading the calls over their horizon."""
    return sharpe_ratio(call_returns(y_pred, returns), horizon, periods_per_year)


def sharpe_test(y_pred: Any, returns: Any) -> tuple[int, float | None]:
    """Return the non-neutral calls and the p-value of their mean return being 0.

    A one-sample two-sided t-test of the returns of trading the non-neutral calls (None with
    fewer than 2 or no variance). With a horizon above 1 the calls' returns overlap and the
    p-value is optimistic.
    """
    pnl = call_returns(y_pred, returns)[_classes(y_pred, "y_pred") != NEUTRAL]
    if pnl.size < 2 or not float(pnl.std(ddof=1)) > 1e-15:
        return int(pnl.size), None
    from scipy.stats import ttest_1samp

    return int(pnl.size), float(ttest_1samp(pnl, 0.0).pvalue)


def one_hot(y: Any) -> FloatArray:
    """Return hard calls as probabilities (1 on the called class)."""
    return np.eye(N_CLASSES)[_classes(y, "y")]


def evaluate(
    y_true: Any,
    proba: Any,
    returns: Any,
    horizon: int = 1,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> dict[str, float | int | None]:
    """Return every metric of probabilistic calls against realised classes and returns."""
    t = _classes(y_true, "y_true")
    p = _proba(proba, t.size)
    pred = calls(p)
    precision, recall, f1 = precision_recall_f1(t, pred)
    trades, p_value = sharpe_test(pred, returns)
    return {
        "rows": int(t.size),
        "accuracy": accuracy(t, pred),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ece": expected_calibration_error(t, p),
        "brier": brier_score(t, p),
        "log_loss": log_loss(t, p),
        "sharpe": sharpe_of_calls(pred, returns, horizon, periods_per_year),
        "sharpe_calls": trades,
        "sharpe_p_value": p_value,
    }


def majority_class(train_labels: Any) -> int:
    """Return the most frequent class of the training labels (the lowest index on ties)."""
    t = _classes(np.asarray(train_labels)[np.isfinite(train_labels)], "train_labels")
    if t.size == 0:
        return NEUTRAL
    return int(np.argmax(np.bincount(t, minlength=N_CLASSES)))


def previous_label_calls(labels: FloatArray, rows: IntArray, horizon: int) -> IntArray:
    """Return, for each row t, the label of bar t - horizon (realised at t); neutral if none."""
    rows = np.asarray(rows, dtype=np.int64)
    src = rows - horizon
    out = np.full(rows.size, NEUTRAL, dtype=np.int64)
    ok = src >= 0
    prev = np.full(rows.size, np.nan)
    prev[ok] = labels[src[ok]]
    known = np.isfinite(prev)
    out[known] = prev[known].astype(np.int64)
    return out


def baseline_metrics(
    labels: FloatArray,
    returns: FloatArray,
    rows: IntArray,
    train_rows: IntArray,
    horizon: int,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> dict[str, dict[str, float | int | None]]:
    """Return the metrics of the majority-class and previous-label baselines on rows."""
    rows = np.asarray(rows, dtype=np.int64)
    y = labels[rows]
    r = returns[rows]
    majority = np.full(rows.size, majority_class(labels[train_rows]), dtype=np.int64)
    previous = previous_label_calls(labels, rows, horizon)
    return {
        "majority": evaluate(y, one_hot(majority), r, horizon, periods_per_year),
        "previous": evaluate(y, one_hot(previous), r, horizon, periods_per_year),
    }
