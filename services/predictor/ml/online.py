"""Online updates: fine-tune a trained ensemble on new rows, keep it only if it holds up.

The seed's ``OnlineLearner``: realised outcomes accumulate in a buffer (1,000 samples, an
update after 100 new ones: :class:`OnlineBuffer`); an update trains each member further on
the buffer plus a sample of history (:func:`update_model`: the LSTM for a few more epochs from
its current weights, XGBoost with a few more trees on top of its own), validates the candidate
and the active model on recent held-out rows, and accepts the candidate only if its ensemble
is not more than ``tolerance`` (5%) worse on the chosen metric. The active model is never
modified; the scaler stays the one fitted at training, so features keep their meaning.
Training rows whose label reaches the validation rows are purged, as in training.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.predictor.ml.dataset import usable_rows
from services.predictor.ml.labels import forward_returns, make_labels
from services.predictor.ml.lstm import LSTMMember
from services.predictor.ml.training import (
    EnsembleModel,
    Member,
    PreparedSeries,
    SeriesData,
    evaluate_segment,
    stack_segment,
    times_ns,
)
from services.predictor.ml.types import (
    Cancel,
    IntArray,
    Report,
    check_cancel,
    never_cancelled,
    noop_report,
)
from services.predictor.ml.xgboost_model import XGBoostMember

LOWER_IS_BETTER = ("ece", "brier")


@dataclass
class OnlineBuffer:
    """Realised samples waiting for an update: (symbol, bar time) keys, newest last."""

    capacity: int = 1000
    threshold: int = 100
    samples: deque[tuple[str, Any]] = field(default_factory=deque)
    new_since_update: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= self.capacity:
            raise ValueError("need 1 <= threshold <= capacity")
        self.samples = deque(self.samples, maxlen=self.capacity)

    def add(self, items: Iterable[tuple[str, Any]]) -> bool:
        """Append realised samples (the oldest fall out); return True when an update is due."""
        for item in items:
            self.samples.append(item)
            self.new_since_update += 1
        return self.due

    @property
    def due(self) -> bool:
        """Return True once `threshold` samples arrived since the last update."""
        return self.new_since_update >= self.threshold

    def mark_updated(self) -> None:
        """Start counting new samples again (after an update, accepted or not)."""
        self.new_since_update = 0


@dataclass(frozen=True)
class UpdateResult:
    """The verdict of an online update and the model to use from now on."""

    accepted: bool
    reason: str
    model: EnsembleModel
    active: dict[str, Any]
    candidate: dict[str, Any]


def rows_at(series: SeriesData, timestamps: Iterable[Any]) -> IntArray:
    """Return the bar numbers of the given bar times in a series (unknown times are skipped)."""
    times = series.times()
    given = list(timestamps)
    if not given:
        return np.empty(0, dtype=np.int64)
    keys = times_ns(given) if series.timestamps is not None else np.asarray(given, np.int64)
    pos = np.searchsorted(times, keys)
    ok = (pos < times.size) & (times[np.minimum(pos, times.size - 1)] == keys)
    return np.unique(pos[ok]).astype(np.int64)


def acceptable(candidate: float, active: float, metric: str, tolerance: float = 0.05) -> bool:
    """Return True when the candidate is not more than `tolerance` worse than the active."""
    if metric in LOWER_IS_BETTER:
        return candidate <= active * (1.0 + tolerance)
    return candidate >= active * (1.0 - tolerance)


def _prepare(
    model: EnsembleModel,
    series: Sequence[SeriesData],
    train_rows: Mapping[str, Any],
    validation_rows: Mapping[str, Any],
) -> list[PreparedSeries]:
    """Label the series and keep the usable requested rows, purging labels into validation."""
    cfg = model.config
    staged = []
    for s in series:
        labels = make_labels(s.close, cfg.horizon, cfg.band, cfg.vol_window)
        usable = usable_rows(s.features, labels, cfg.context)
        times = s.times()
        segs: dict[str, IntArray] = {}
        for name, wanted in (("train", train_rows), ("validation", validation_rows)):
            rows = np.unique(np.asarray(wanted.get(s.symbol, []), dtype=np.int64))
            segs[name] = np.intersect1d(rows, usable)
        staged.append((s, labels, times, segs))
    firsts = [
        times[segs["validation"][0]] for _, _, times, segs in staged if segs["validation"].size
    ]
    if not firsts:
        raise ValueError("no usable validation rows")
    start = min(firsts)
    out = []
    for s, labels, times, segs in staged:
        train = segs["train"]
        train = train[times[train + cfg.horizon] < start]  # labels end before validation
        segments = {"train": train, "validation": segs["validation"], "test": train[:0]}
        out.append(PreparedSeries(s, labels, forward_returns(s.close, cfg.horizon), segments))
    if sum(p.segments["train"].size for p in out) == 0:
        raise ValueError("no usable training rows before the validation rows")
    return out


def update_model(
    model: EnsembleModel,
    series: SeriesData | Sequence[SeriesData],
    train_rows: Mapping[str, Any],
    validation_rows: Mapping[str, Any],
    *,
    epochs: int = 5,
    trees: int = 20,
    tolerance: float = 0.05,
    metric: str = "accuracy",
    seed: int | None = None,
    sharpes: Mapping[str, float] | None = None,
    report: Report = noop_report,
    cancel: Cancel = never_cancelled,
) -> UpdateResult:
    """Fine-tune the members on train_rows, validate on validation_rows, accept or discard.

    sharpes (member -> recent Sharpe ratio of its own calls) reweights the candidate's
    ensemble (:meth:`AdaptiveEnsemble.update_weights`) before it is judged.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0.0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    items = [series] if isinstance(series, SeriesData) else list(series)
    cfg = model.config
    prepared = _prepare(model, items, train_rows, validation_rows)
    z = [model.scaler.transform(p.data.features) for p in prepared]
    train = stack_segment(prepared, z, "train", cfg)
    val = stack_segment(prepared, z, "validation", cfg)
    seed = cfg.seed if seed is None else int(seed)
    check_cancel(cancel)

    members: dict[str, Member] = {}
    for i, (name, member) in enumerate(model.members.items()):
        sub = _member_report(report, i, len(model.members))
        common = {"y_val": val["y"], "seed": seed, "report": sub, "cancel": cancel}
        if isinstance(member, LSTMMember):
            members[name] = member.fine_tune(
                train["windows"], train["y"], x_val=val["windows"], epochs=epochs, **common
            )
        elif isinstance(member, XGBoostMember):
            members[name] = member.fine_tune(
                train["x"], train["y"], x_val=val["x"], trees=trees, **common
            )
        else:
            raise TypeError(f"cannot fine-tune member {name!r}")
    info: dict[str, Any] = {**model.info, "updates": int(model.info.get("updates", 0)) + 1}
    for name, member in members.items():
        if isinstance(member, LSTMMember):
            info[name] = {**info.get(name, {}), "epochs_run": member.epochs_run}
        elif isinstance(member, XGBoostMember):
            info[name] = {**info.get(name, {}), "trees": member.booster.num_boosted_rounds()}
    candidate = EnsembleModel(
        config=cfg,
        feature_names=model.feature_names,
        scaler=model.scaler,
        members=members,
        ensemble=type(model.ensemble).from_dict(model.ensemble.to_dict()),
        metrics=model.metrics,
        info=info,
    )
    if sharpes is not None:
        candidate.ensemble.update_weights(sharpes)
    majority = int(model.info.get("majority_class", 1))
    freq = model.info.get("class_frequencies")
    active_figures = evaluate_segment(model, val, majority, cfg.horizon, freq)
    candidate_figures = evaluate_segment(candidate, val, majority, cfg.horizon, freq)
    new, old = candidate_figures["ensemble"][metric], active_figures["ensemble"][metric]
    accepted = acceptable(new, old, metric, tolerance)
    verb = "not more" if accepted else "more"
    reason = (
        f"validation {metric} {new:.4f} against the active model's {old:.4f} on "
        f"{val['y'].size} recent rows: {verb} than {tolerance:.0%} worse"
    )
    report(1.0, 1.0, "accepted" if accepted else "discarded")
    if accepted:
        candidate.metrics = {**model.metrics, "online": candidate_figures}
        candidate.info["online_training_rows"] = int(train["y"].size)
    return UpdateResult(
        accepted=accepted,
        reason=reason,
        model=candidate if accepted else model,
        active=active_figures,
        candidate=candidate_figures,
    )


def _member_report(report: Report, index: int, count: int) -> Report:
    """Map one member's progress onto its share of [0, 1]."""

    def forward(done: float, total: float, message: str) -> None:
        report((index + (done / total if total else 1.0)) / count, 1.0, message)

    return forward
