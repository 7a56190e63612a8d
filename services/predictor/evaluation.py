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
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from services.predictor.ml import metrics as m
from services.predictor.ml.labels import forward_returns, make_labels
from services.predictor.ml.types import CLASSES, FloatArray, IntArray
from services.predictor.schemas import Direction, Evaluation, Figures
from shared.verdicts import (
    MIN_CALLS,
    PairedVerdict,
    decide,
    describe,
    judge_calls,
    no_evidence,
)

if TYPE_CHECKING:
    from services.predictor.ml.training import EnsembleModel

IN_SAMPLE_WARNING = (
    "In sample: these bars lie inside the version's training or validation range, so the "
    "model has seen them (or picked its epochs on them); their figures flatter it and no "
    "verdict is drawn from them."
)


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


def _figures(value: Any) -> Figures | None:
    return Figures.model_validate(value) if isinstance(value, Mapping) else None


def evaluation(segment: Mapping[str, Any] | None, min_calls: int = MIN_CALLS) -> Evaluation:
    """Return a stored segment's metrics (`train_ensemble`'s layout) as an Evaluation."""
    if not segment or not segment.get("rows"):
        return Evaluation(rows=0)
    members = {
        name: Figures.model_validate(figs)
        for name, figs in segment.items()
        if name in ("lstm", "xgboost") and isinstance(figs, Mapping)
    }
    tests = {
        name: rejudge(stored, min_calls) for name, stored in segment.get("comparisons", {}).items()
    }
    return Evaluation(
        rows=int(segment["rows"]),
        members=members,
        ensemble=Figures.model_validate(segment["ensemble"]),
        baselines={k: Figures.model_validate(v) for k, v in segment["baselines"].items()},
        climatology=_figures(segment.get("climatology")),
        baseline_tests=tests,
        beats_baselines={k: v.verdict == "beats" for k, v in tests.items()},
    )


def rejudge(stored: Mapping[str, Any], min_calls: int = MIN_CALLS) -> PairedVerdict:
    """Return a stored paired verdict decided again at min_calls (its counts suffice)."""
    v = PairedVerdict.model_validate(stored)
    return decide(v.n, v.baselines, min_calls=min_calls, alpha=v.alpha)


@dataclass(frozen=True)
class VersionVerdict:
    """A version's verdict against the baselines: the paired test, its prose, beats or not."""

    test: PairedVerdict
    sentence: str

    @property
    def beats(self) -> bool:
        """Return True only when the verdict is `beats`."""
        return self.test.verdict == "beats"


def probabilistic_note(figures: Evaluation | None) -> str:
    """Return the ensemble's Brier score and log-loss beside the climatology forecast's."""
    if figures is None or figures.ensemble is None or figures.climatology is None:
        return ""
    e, c = figures.ensemble, figures.climatology
    if e.log_loss is None or c.log_loss is None:
        return ""
    better = e.brier < c.brier and e.log_loss < c.log_loss
    word = "better than" if better else "NOT better than"
    return (
        f" Probabilities: Brier {e.brier:.3f} and log-loss {e.log_loss:.3f} against "
        f"{c.brier:.3f} and {c.log_loss:.3f} for the training class frequencies "
        f"(climatology): {word} climatology on both."
    )


def sharpe_note(figures: Figures | None) -> str:
    """Return the Sharpe ratio of the calls with its sample and p-value."""
    if figures is None or figures.sharpe_calls is None:
        return ""
    p = "n/a" if figures.sharpe_p_value is None else f"{figures.sharpe_p_value:.3g}"
    return (
        f" Sharpe of trading the calls {figures.sharpe:.2f} on {figures.sharpe_calls} "
        f"non-neutral calls (t-test of their mean return, two-sided p = {p})."
    )


def verdict_of(figures: Evaluation, where: str, min_calls: int = MIN_CALLS) -> VersionVerdict:
    """Return the ensemble's paired verdict on one evaluation, with its prose."""
    test = figures.baseline_tests.get("ensemble")
    if figures.ensemble is None or test is None:
        empty = no_evidence(min_calls)
        why = (
            f"No {where} rows with the paired test to judge the model on"
            if figures.rows == 0 or figures.ensemble is None
            else f"The {where} figures were stored before the paired test (retrain to judge)"
        )
        return VersionVerdict(empty, f"Insufficient evidence: {why}; treat its calls as unproven.")
    sentence = describe(test, subject="the ensemble", where=f"out of sample ({where})")
    return VersionVerdict(
        test, sentence + probabilistic_note(figures) + sharpe_note(figures.ensemble)
    )


def verdict(metrics: Mapping[str, Any], min_calls: int = MIN_CALLS) -> VersionVerdict:
    """Return a version's verdict: its untouched test segment's paired test (never validation,
    which picked the LSTM's epochs and flagged degenerate members)."""
    test = evaluation(metrics.get("test"), min_calls)
    text = verdict_of(test, "test segment", min_calls)
    degenerate = metrics.get("info", {}).get("degenerate") or {}
    if degenerate:
        named = ", ".join(f"{k} (always {v})" for k, v in sorted(degenerate.items()))
        text = VersionVerdict(
            text.test,
            f"{text.sentence} Degenerate member(s), one class on every validation bar: "
            f"{named}; weight 0.",
        )
    return text


@dataclass(frozen=True)
class TrainingRange:
    """The bars a version learnt from (training and validation; online updates' too), ns."""

    first_ns: int | None
    last_ns: int | None
    symbols: tuple[str, ...]

    def contains(self, time_ns: int) -> bool:
        """Return True when a bar lies inside the range (in sample)."""
        if self.first_ns is None or self.last_ns is None:
            return False
        return self.first_ns <= time_ns <= self.last_ns

    def mask(self, times_ns: Any) -> np.ndarray:
        """Return which bars lie inside the range."""
        t = np.asarray(times_ns, dtype=np.int64)
        if self.first_ns is None or self.last_ns is None:
            return np.zeros(t.size, dtype=bool)
        return (t >= self.first_ns) & (t <= self.last_ns)


def _ns(text: Any) -> int | None:
    """Return an ISO time as UTC nanoseconds (None for none, or for bar numbers)."""
    if text is None or isinstance(text, int | float):
        return None
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def training_range(
    training_metrics: Mapping[str, Any],
    symbols: Sequence[str],
    data_start_ns: int | None,
    data_end_ns: int | None,
) -> TrainingRange:
    """Return a version's in-sample range: first training bar to last validation bar.

    Read from the version's metadata (`info.segments`: each symbol's train / validation /
    test bounds); an online update also learnt from outcomes up to its `data_end`. A version
    stored without segments counts its whole data range as in sample.
    """
    segments = training_metrics.get("info", {}).get("segments") or {}
    firsts: list[int] = []
    lasts: list[int] = []
    for bounds in segments.values():
        first = _ns(bounds.get("train", {}).get("first"))
        last = _ns(bounds.get("validation", {}).get("last")) or _ns(
            bounds.get("train", {}).get("last")
        )
        if first is not None:
            firsts.append(first)
        if last is not None:
            lasts.append(last)
    lo = min(firsts) if firsts else data_start_ns
    hi = max(lasts) if lasts else data_end_ns
    if training_metrics.get("kind") == "online_update" and data_end_ns is not None:
        hi = max(hi, data_end_ns) if hi is not None else data_end_ns
    return TrainingRange(lo, hi, tuple(symbols))


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
    """Figures of realised predictions: out of sample (judged), in sample (reported only)."""

    ensemble: Figures | None
    members: dict[str, Figures]
    baselines: dict[str, Figures]
    climatology: Figures | None
    test: PairedVerdict
    verdict: str
    out_of_sample: int
    in_sample: Evaluation | None

    @property
    def beats(self) -> bool | None:
        """Return whether the verdict is `beats` (None without out-of-sample outcomes)."""
        return None if self.out_of_sample == 0 else self.test.verdict == "beats"


def _subset(realised: Realised, keep: np.ndarray) -> Realised:
    idx = np.flatnonzero(keep)
    return Realised(
        items=[realised.items[i] for i in idx],
        labels=realised.labels[idx],
        returns=realised.returns[idx],
        previous=realised.previous[idx],
        pending=realised.pending,
    )


def _evaluate(
    realised: Realised, *, horizon: int, majority: int, frequencies: Any, min_calls: int
) -> Evaluation:
    """Return the figures and the paired test of realised predictions (at least one)."""
    n = realised.labels.size
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
    hard = {"majority": np.full(n, majority, dtype=np.int64), "previous": realised.previous}
    baselines = {
        k: Figures.model_validate(m.evaluate(y, m.one_hot(v), r, horizon)) for k, v in hard.items()
    }
    freq = frequencies if frequencies is not None else m.class_frequencies(np.empty(0))
    clim = Figures.model_validate(m.evaluate(y, m.climatology(freq, n), r, horizon))
    test = judge_calls(m.calls(proba), y, hard, min_calls=min_calls)
    return Evaluation(
        rows=n,
        members=members,
        ensemble=ensemble,
        baselines=baselines,
        climatology=clim,
        baseline_tests={"ensemble": test},
        beats_baselines={"ensemble": test.verdict == "beats"},
    )


def live_figures(
    realised: Realised,
    *,
    horizon: int,
    majority: int,
    frequencies: Any = None,
    trained: TrainingRange | None = None,
    min_calls: int = MIN_CALLS,
) -> LiveFigures:
    """Evaluate realised predictions beside the baselines, out of sample apart.

    Predictions on bars inside the version's training range (`trained`) are in sample:
    reported under their own name with a warning, never judged. The verdict is the paired
    test (:func:`shared.verdicts.judge`) of the out-of-sample ones.
    """
    times = np.asarray([it.time_ns for it in realised.items], dtype=np.int64)
    inside = trained.mask(times) if trained is not None else np.zeros(times.size, dtype=bool)
    kw = {"horizon": horizon, "majority": majority, "frequencies": frequencies}
    in_sample = None
    if inside.any():
        in_sample = _evaluate(_subset(realised, inside), min_calls=min_calls, **kw)
    oos = _subset(realised, ~inside)
    n = oos.labels.size
    if n == 0:
        note = (
            f"No realised out-of-sample predictions yet ({realised.pending} pending"
            + (f", {int(inside.sum())} in sample, not judged" if inside.any() else "")
            + f"): outcomes are known {horizon} bar(s) after the bar predicted from."
        )
        if in_sample is not None:
            note += " " + IN_SAMPLE_WARNING
        return LiveFigures(None, {}, {}, None, no_evidence(min_calls), note, 0, in_sample)
    figures = _evaluate(oos, min_calls=min_calls, **kw)
    judged = verdict_of(figures, "live predictions", min_calls)
    sentence = judged.sentence
    if in_sample is not None:
        sentence += (
            f" {in_sample.rows} other realised prediction(s) fall inside the training range "
            f"and are reported apart (`in_sample`). " + IN_SAMPLE_WARNING
        )
    return LiveFigures(
        figures.ensemble,
        figures.members,
        figures.baselines,
        figures.climatology,
        judged.test,
        sentence,
        n,
        in_sample,
    )


def direction_value(direction: str) -> float:
    """Return -1, 0 or +1 for down, neutral, up (the `predicted_value` logged)."""
    return float(CLASSES.index(direction) - 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-th percentile of values (None for none)."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class RangeOutcomes:
    """A range's realised classes, the baselines' calls, hit rates and the paired test."""

    outcome: list[Direction | None]
    baseline_calls: dict[str, list[Direction]]
    hit_rate: dict[str, float | None]
    in_sample_hit_rate: dict[str, float | None]
    test: PairedVerdict
    sentence: str


def _rates(calls: Any, y: Any, base: dict[str, Any]) -> dict[str, float | None]:
    if len(y) == 0:
        return {"model": None, "majority": None, "previous": None}
    return {
        "model": float(np.mean(calls == y)),
        **{k: float(np.mean(v == y)) for k, v in base.items()},
    }


def range_outcomes(
    close: Any,
    rows: Any,
    calls: Any,
    model: EnsembleModel,
    *,
    majority: int,
    inside: Any = None,
    min_calls: int = MIN_CALLS,
) -> RangeOutcomes:
    """Return each called bar's realised class, the baselines' calls, the hit rates of the
    realised out-of-sample bars (in-sample ones apart) and their paired test."""
    cfg = model.config
    rows = np.asarray(rows, dtype=np.int64)
    calls = np.asarray(calls, dtype=np.int64)
    labels = make_labels(close, cfg.horizon, cfg.band, cfg.vol_window) if close.size else close
    known = np.isfinite(labels[rows]) if rows.size else np.zeros(0, dtype=bool)
    inside = np.zeros(rows.size, dtype=bool) if inside is None else np.asarray(inside, bool)
    outcome: list[Direction | None] = [
        cast(Direction, CLASSES[int(labels[r])]) if k else None
        for r, k in zip(rows, known, strict=True)
    ]
    previous = m.previous_label_calls(labels, rows, cfg.horizon)
    base = {"majority": np.full(rows.size, majority, dtype=np.int64), "previous": previous}
    baseline_calls: dict[str, list[Direction]] = {
        "majority": [cast(Direction, CLASSES[majority])] * int(rows.size),
        "previous": [cast(Direction, CLASSES[int(v)]) for v in previous],
    }
    y = np.where(known, np.nan_to_num(labels[rows] if rows.size else known), -1).astype(np.int64)
    oos, ins = known & ~inside, known & inside
    test = judge_calls(
        calls[oos], y[oos], {k: v[oos] for k, v in base.items()}, min_calls=min_calls
    )
    return RangeOutcomes(
        outcome=outcome,
        baseline_calls=baseline_calls,
        hit_rate=_rates(calls[oos], y[oos], {k: v[oos] for k, v in base.items()}),
        in_sample_hit_rate=_rates(calls[ins], y[ins], {k: v[ins] for k, v in base.items()}),
        test=test,
        sentence=describe(test, subject="the model", where="on this range's out-of-sample bars")
        + (f" {int(ins.sum())} realised bar(s) in sample, apart." if ins.any() else ""),
    )
