"""Honest figures: the verdict against the baselines, and live outcomes of logged predictions.

Pure functions (numpy, no I/O). :func:`verdict` reads a version's stored evaluation: the test
segment (out of sample, never used to pick anything) when it has rows, else validation. A
version whose ensemble accuracy is not strictly above both naive baselines says so in every
answer. :func:`realise` labels logged predictions with the bars that followed them (the
same labels as training: the version's horizon, band and volatility window) and
:func:`live_figures` evaluates them beside the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.predictor.ml import metrics as m
from services.predictor.ml.labels import forward_returns, make_labels
from services.predictor.ml.types import CLASSES, FloatArray, IntArray
from services.predictor.schemas import Evaluation, Figures

BASELINE_NAMES = {"majority": "the majority class", "previous": "yesterday's direction"}


def clean_json(value: Any) -> Any:
    """Return value with non-finite floats as None and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluation(segment: Mapping[str, Any] | None) -> Evaluation:
    """Return a stored segment's metrics (`train_ensemble`'s layout) as an Evaluation."""
    if not segment or not segment.get("rows"):
        return Evaluation(rows=0)
    members = {
        name: Figures.model_validate(figs)
        for name, figs in segment.items()
        if name in ("lstm", "xgboost") and isinstance(figs, Mapping)
    }
    return Evaluation(
        rows=int(segment["rows"]),
        members=members,
        ensemble=Figures.model_validate(segment["ensemble"]),
        baselines={k: Figures.model_validate(v) for k, v in segment["baselines"].items()},
        beats_baselines={k: bool(v) for k, v in segment.get("beats_baselines", {}).items()},
    )


def verdict_of(figures: Evaluation, where: str) -> tuple[bool, str]:
    """Return (beats, sentence) for the ensemble of one evaluation against its baselines."""
    if figures.ensemble is None or not figures.baselines:
        return False, f"No {where} rows to judge the model on: treat its calls as unproven."
    mine = figures.ensemble.accuracy
    others = {k: v.accuracy for k, v in figures.baselines.items()}
    beats = all(mine > o for o in others.values())
    against = " and ".join(
        f"{BASELINE_NAMES.get(k, k)} ({o:.3f})" for k, o in sorted(others.items())
    )
    if beats:
        return True, (
            f"Out of sample ({where}, {figures.rows} bars) the ensemble's accuracy {mine:.3f} "
            f"beats {against}."
        )
    return False, (
        f"Out of sample ({where}, {figures.rows} bars) the ensemble's accuracy {mine:.3f} does "
        f"NOT beat {against}: treat its calls as no better than naive."
    )


def verdict(metrics: Mapping[str, Any]) -> tuple[bool, str]:
    """Return a version's (beats_baselines, verdict): the test segment, else validation."""
    test = evaluation(metrics.get("test"))
    if test.rows:
        return verdict_of(test, "test segment")
    return verdict_of(evaluation(metrics.get("validation")), "validation segment")


# ---- live outcomes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """One distinct logged prediction: its bar and what the model and members said."""

    symbol: str
    time_ns: int
    probabilities: tuple[float, float, float]
    members: dict[str, tuple[float, float, float]]


@dataclass(frozen=True)
class Realised:
    """Logged predictions whose outcome is known: labels, returns, previous labels."""

    items: list[Logged]
    labels: IntArray
    returns: FloatArray
    previous: IntArray
    pending: int


def probs_tuple(p: Mapping[str, float]) -> tuple[float, float, float]:
    """Return `{down, neutral, up}` as a tuple in class order."""
    return (float(p["down"]), float(p["neutral"]), float(p["up"]))


def realise(
    logged: Sequence[Logged],
    closes: Mapping[str, tuple[IntArray, FloatArray]],
    *,
    horizon: int,
    band: float,
    vol_window: int,
) -> Realised:
    """Label each logged prediction from the bars after it; keep those already realised.

    closes maps a symbol to (bar times in ns, closes) covering the predictions' bars, the
    volatility window before them and the horizon after.
    """
    items: list[Logged] = []
    labels: list[int] = []
    returns: list[float] = []
    previous: list[int] = []
    pending = 0
    cache: dict[str, tuple[IntArray, FloatArray, FloatArray]] = {}
    for item in logged:
        bars = closes.get(item.symbol)
        if bars is None or bars[0].size == 0:
            pending += 1
            continue
        if item.symbol not in cache:
            times, close = bars
            lab = make_labels(close, horizon, band, vol_window) if close.size else close
            cache[item.symbol] = (times, lab, forward_returns(close, horizon))
        times, lab, fwd = cache[item.symbol]
        i = int(np.searchsorted(times, item.time_ns))
        if i >= times.size or times[i] != item.time_ns or not np.isfinite(lab[i]):
            pending += 1  # its horizon has not passed (or the bar is unknown)
            continue
        items.append(item)
        labels.append(int(lab[i]))
        returns.append(float(fwd[i]))
        j = i - horizon
        previous.append(int(lab[j]) if j >= 0 and np.isfinite(lab[j]) else 1)
    return Realised(
        items=items,
        labels=np.asarray(labels, dtype=np.int64),
        returns=np.asarray(returns, dtype=np.float64),
        previous=np.asarray(previous, dtype=np.int64),
        pending=pending,
    )


@dataclass(frozen=True)
class LiveFigures:
    """Figures of realised predictions: ensemble, members, baselines, the verdict."""

    ensemble: Figures | None
    members: dict[str, Figures]
    baselines: dict[str, Figures]
    beats: bool | None
    verdict: str


def live_figures(realised: Realised, *, horizon: int, majority: int) -> LiveFigures:
    """Evaluate realised predictions and the baselines on the same bars."""
    n = realised.labels.size
    if n == 0:
        note = (
            f"No realised predictions yet ({realised.pending} pending): outcomes are known "
            f"{horizon} bar(s) after the bar predicted from."
        )
        return LiveFigures(None, {}, {}, None, note)
    y, r = realised.labels, realised.returns
    proba = np.asarray([it.probabilities for it in realised.items], dtype=np.float64)
    ensemble = Figures.model_validate(m.evaluate(y, proba, r, horizon))
    names = sorted({name for it in realised.items for name in it.members})
    members = {}
    for name in names:
        rows = [i for i, it in enumerate(realised.items) if name in it.members]
        if len(rows) == n:
            p = np.asarray([it.members[name] for it in realised.items], dtype=np.float64)
            members[name] = Figures.model_validate(m.evaluate(y, p, r, horizon))
    majority_calls = np.full(n, majority, dtype=np.int64)
    baselines = {
        "majority": Figures.model_validate(m.evaluate(y, m.one_hot(majority_calls), r, horizon)),
        "previous": Figures.model_validate(m.evaluate(y, m.one_hot(realised.previous), r, horizon)),
    }
    beats, sentence = verdict_of(
        Evaluation(rows=n, ensemble=ensemble, baselines=baselines), "live predictions"
    )
    return LiveFigures(ensemble, members, baselines, beats, sentence)


def direction_value(direction: str) -> float:
    """Return -1, 0 or +1 for down, neutral, up (the `predicted_value` logged)."""
    return float(CLASSES.index(direction) - 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-th percentile of values (None for none)."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
