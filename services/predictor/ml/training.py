"""Train the ensemble on one or more symbols' features, evaluate it honestly, serialise it.

:func:`train_ensemble` takes :class:`SeriesData` (a symbol's feature matrix, closes and bar
times), labels each bar (:mod:`~services.predictor.ml.labels`), keeps the usable rows (a full
``seq_len`` window of complete features and a defined label), splits them on common dates
into train / validation / test with purging (:mod:`~services.predictor.ml.dataset`), fits the
scaler on training rows only, trains the members, and evaluates every member, the ensemble
(equal weights at first) and the naive baselines on the validation and test rows. A model
that does not beat the baselines says so in ``metrics[...]["beats_baselines"]``.

:class:`EnsembleModel` predicts from a symbol's raw feature matrix and round-trips through
:meth:`~EnsembleModel.to_artifacts` / :meth:`~EnsembleModel.from_artifacts`: a dict of
portable bytes (``state.json``, ``lstm.keras``, ``xgboost.ubj``; no pickle). Loaded to serve,
the LSTM predicts in numpy (within 1e-6 of Keras, no TensorFlow); loaded ``trainable`` (to
fine-tune, in a worker process) it is the Keras model again, with bit-identical predictions.
xgboost loads only when a member needs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from services.predictor.ml import metrics as m
from services.predictor.ml.dataset import (
    Standardizer,
    assign_segments,
    sequence_windows,
    split_boundaries,
    usable_rows,
)
from services.predictor.ml.ensemble import AdaptiveEnsemble, EnsembleOutput
from services.predictor.ml.labels import forward_returns, make_labels
from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.types import (
    CLASSES,
    Cancel,
    FloatArray,
    IntArray,
    Report,
    check_cancel,
    never_cancelled,
    noop_report,
)
from services.predictor.ml.xgboost_model import XGBoostConfig
from shared.verdicts import judge_calls

MEMBERS = ("lstm", "xgboost")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how: members, label horizon and band, split, seed, member configs."""

    models: tuple[str, ...] = MEMBERS
    horizon: int = 1
    band: float = 0.5
    vol_window: int = 21
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    clip: float = 10.0
    temperature: float = 1.0
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    xgboost: XGBoostConfig = field(default_factory=XGBoostConfig)

    def __post_init__(self) -> None:
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct and non-empty, got {self.models}")
        unknown = [name for name in self.models if name not in MEMBERS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; expected some of {list(MEMBERS)}")
        if int(self.horizon) != self.horizon or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon}")

    @property
    def context(self) -> int:
        """Return how many feature rows one sample reads (the LSTM's window, else 1)."""
        return self.lstm.seq_len if "lstm" in self.models else 1

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready settings."""
        return {
            "models": list(self.models),
            "horizon": self.horizon,
            "band": self.band,
            "vol_window": self.vol_window,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "clip": self.clip,
            "temperature": self.temperature,
            "lstm": self.lstm.to_dict(),
            "xgboost": self.xgboost.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(state)
        values["models"] = tuple(values["models"])
        values["lstm"] = LSTMConfig.from_dict(values["lstm"])
        values["xgboost"] = XGBoostConfig(**values["xgboost"])
        return cls(**values)


def times_ns(timestamps: Any) -> IntArray:
    """Return timestamps (datetime64, dates, strings) as int64 nanoseconds since the epoch."""
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamps)))
    return np.asarray(stamps.as_unit("ns").asi8, dtype=np.int64)


@dataclass(frozen=True)
class SeriesData:
    """One symbol's bars: feature matrix (bars x features), closes, and bar times."""

    symbol: str
    features: FloatArray
    close: FloatArray
    timestamps: Any = None

    def times(self) -> IntArray:
        """Return the bar times as int64 nanoseconds (bar numbers when none were given)."""
        n = self.close.shape[0]
        if self.timestamps is None:
            return np.arange(n, dtype=np.int64)
        stamps = times_ns(self.timestamps)
        if stamps.size != n:
            raise ValueError(f"{self.symbol}: {stamps.size} timestamps for {n} bars")
        return stamps


class Member(Protocol):
    """What the ensemble needs of a trained member."""

    name: str

    def predict_proba(self, x: Any) -> FloatArray:
        """Return (samples x 3) class probabilities."""
        ...

    def to_bytes(self) -> bytes:
        """Return the member's portable bytes."""
        ...


@dataclass
class PreparedSeries:
    """One symbol's labels, returns, usable rows and segment rows."""

    data: SeriesData
    labels: FloatArray
    returns: FloatArray
    segments: dict[str, IntArray]


def _prepare(series: Sequence[SeriesData], config: TrainConfig) -> list[PreparedSeries]:
    """Label every series and split the usable rows on common dates, purged by horizon."""
    if not series:
        raise ValueError("need at least one series to train on")
    if len(series) > 1 and any(s.timestamps is None for s in series):
        raise ValueError("several series need timestamps to be split on common dates")
    width = series[0].features.shape[1]
    staged = []
    for s in series:
        if s.features.ndim != 2 or s.features.shape != (s.close.shape[0], width):
            raise ValueError(f"{s.symbol}: features must be (bars x {width}) like the others")
        labels = make_labels(s.close, config.horizon, config.band, config.vol_window)
        rows = usable_rows(s.features, labels, config.context)
        staged.append((s, labels, rows, s.times()))
    pooled = np.concatenate([times[rows] for _, _, rows, times in staged])
    bounds = split_boundaries(pooled, config.validation_fraction, config.test_fraction)
    out = []
    for s, labels, rows, times in staged:
        train, val, test = assign_segments(times[rows], times[rows + config.horizon], bounds)
        segments = {"train": rows[train], "validation": rows[val], "test": rows[test]}
        out.append(PreparedSeries(s, labels, forward_returns(s.close, config.horizon), segments))
    if sum(p.segments["train"].size for p in out) == 0:
        raise ValueError("no training rows: the series are shorter than the warm-up")
    return out


class EnsembleModel:
    """Trained members, the training scaler and the adaptive ensemble; predicts and saves."""

    def __init__(
        self,
        *,
        config: TrainConfig,
        feature_names: Sequence[str],
        scaler: Standardizer,
        members: Mapping[str, Member],
        ensemble: AdaptiveEnsemble,
        metrics: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.feature_names = list(feature_names)
        self.scaler = scaler
        self.members = dict(members)
        self.ensemble = ensemble
        self.metrics = dict(metrics or {})
        self.info = dict(info or {})

    # ---- inference -----------------------------------------------------------------------

    def member_probabilities(self, features: FloatArray, rows: Any = None) -> dict[str, FloatArray]:
        """Return each member's probabilities at rows (default: the last bar) of raw features."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"features must be (bars x {len(self.feature_names)}), got {x.shape}")
        idx = np.asarray([x.shape[0] - 1] if rows is None else rows, dtype=np.int64).reshape(-1)
        ctx = self.config.context
        if idx.size and (idx.min() < ctx - 1 or idx.max() >= x.shape[0]):
            raise ValueError(f"each row needs {ctx - 1} earlier bars inside features")
        gaps = np.concatenate([[0], np.cumsum(~np.isfinite(x).all(axis=1))])
        bad = idx[gaps[idx + 1] - gaps[idx + 1 - ctx] > 0]
        if bad.size:
            raise ValueError(f"row {int(bad[0])}: features incomplete in its {ctx}-bar window")
        z = self.scaler.transform(x)
        out: dict[str, FloatArray] = {}
        for name, member in self.members.items():
            if name == "lstm":
                out[name] = member.predict_proba(sequence_windows(z, idx, ctx))
            else:
                out[name] = member.predict_proba(z[idx])
        return out

    def predict(self, features: FloatArray, rows: Any = None) -> EnsembleOutput:
        """Return the ensemble's probabilities, members' and weights at rows of raw features."""
        return self.ensemble.combine(self.member_probabilities(features, rows))

    def prepare(self, *, wait: bool = True) -> None:
        """Make the members' inference cheaper (same answers): the LSTM's unrolled function."""
        for member in self.members.values():
            prepare = getattr(member, "prepare", None)
            if prepare is not None:
                prepare(wait=wait)

    # ---- serialisation -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return the JSON-ready state (everything but the members' weights)."""
        return {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "feature_names": self.feature_names,
            "scaler": self.scaler.to_dict(),
            "ensemble": self.ensemble.to_dict(),
            "metrics": self.metrics,
            "info": self.info,
        }

    def to_artifacts(self) -> dict[str, bytes]:
        """Return portable bytes: state.json, lstm.keras and/or xgboost.ubj (no pickle)."""
        state = json.dumps(self.state(), sort_keys=True, allow_nan=False).encode()
        out = {"state.json": state}
        for name, member in self.members.items():
            out[ARTIFACT_NAMES[name]] = member.to_bytes()
        return out

    @classmethod
    def from_artifacts(
        cls, artifacts: Mapping[str, bytes], *, trainable: bool = False
    ) -> EnsembleModel:
        """Load a model saved by :meth:`to_artifacts`.

        The LSTM predicts in numpy (:class:`~.lstm_inference.LSTMInference`: no TensorFlow)
        unless ``trainable``, which loads it into Keras to fine-tune (worker processes only).
        """
        state = json.loads(artifacts["state.json"])
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {state.get('format')!r}")
        config = TrainConfig.from_dict(state["config"])
        members: dict[str, Member] = {}
        for name in config.models:
            data = artifacts[ARTIFACT_NAMES[name]]
            if name == "lstm":
                epochs = int(state["info"].get("lstm", {}).get("epochs_run", 0))
                if trainable:
                    from services.predictor.ml.lstm import LSTMMember

                    members[name] = LSTMMember.from_bytes(data, config.lstm, epochs_run=epochs)
                else:
                    from services.predictor.ml.lstm_inference import LSTMInference

                    members[name] = LSTMInference.from_bytes(data, config.lstm, epochs_run=epochs)
            else:
                from services.predictor.ml.xgboost_model import XGBoostMember

                members[name] = XGBoostMember.from_bytes(data, config.xgboost)
        return cls(
            config=config,
            feature_names=state["feature_names"],
            scaler=Standardizer.from_dict(state["scaler"]),
            members=members,
            ensemble=AdaptiveEnsemble.from_dict(state["ensemble"]),
            metrics=state["metrics"],
            info=state["info"],
        )


ARTIFACT_NAMES = {"lstm": "lstm.keras", "xgboost": "xgboost.ubj"}


# ---- training ------------------------------------------------------------------------------


def stack_segment(
    prepared: Sequence[PreparedSeries], z: Sequence[FloatArray], segment: str, config: TrainConfig
) -> dict[str, Any]:
    """Return one segment's samples over all series: rows, windows, labels, returns."""
    tab, win, y, r, prev = [], [], [], [], []
    for p, zi in zip(prepared, z, strict=True):
        rows = p.segments[segment]
        tab.append(zi[rows])
        if "lstm" in config.models:
            win.append(sequence_windows(zi, rows, config.lstm.seq_len))
        y.append(p.labels[rows].astype(np.int64))
        r.append(p.returns[rows])
        prev.append(m.previous_label_calls(p.labels, rows, config.horizon))
    return {
        "x": np.concatenate(tab),
        "windows": np.concatenate(win) if win else None,
        "y": np.concatenate(y),
        "returns": np.concatenate(r),
        "previous": np.concatenate(prev),
    }


def _scaled_report(report: Report, offset: float, span: float, total: float) -> Report:
    """Map a member's (done, of) progress onto [offset, offset + span] of the whole job."""

    def forward(done: float, of: float, message: str) -> None:
        report(offset + span * (done / of if of else 1.0), total, message)

    return forward


def evaluate_segment(
    model: EnsembleModel,
    data: Mapping[str, Any],
    majority: int,
    horizon: int,
    frequencies: Any = None,
) -> dict[str, Any]:
    """Return the metrics of members, ensemble and baselines on one segment's samples.

    Beside the hard baselines (majority class, previous label) it scores the climatology
    forecast (the training labels' class frequencies on every row: the probabilistic
    baseline of Brier score and log-loss), and it keeps, per member and the ensemble, the
    paired comparison with each hard baseline (:func:`shared.verdicts.judge`: the counts
    b, c and the exact McNemar p-value); ``beats_baselines`` is that verdict being `beats`.
    """
    if data["y"].size == 0:
        return {"rows": 0}
    probs: dict[str, FloatArray] = {}
    for name, member in model.members.items():
        probs[name] = member.predict_proba(data["windows"] if name == "lstm" else data["x"])
    combined = model.ensemble.combine(probs)
    y, ret = data["y"], data["returns"]
    out: dict[str, Any] = {name: m.evaluate(y, p, ret, horizon) for name, p in probs.items()}
    out["ensemble"] = m.evaluate(y, combined.probabilities, ret, horizon)
    major = np.full(y.size, majority, dtype=np.int64)
    hard = {"majority": major, "previous": np.asarray(data["previous"], dtype=np.int64)}
    out["baselines"] = {k: m.evaluate(y, m.one_hot(v), ret, horizon) for k, v in hard.items()}
    freq = frequencies if frequencies is not None else m.class_frequencies(np.empty(0))
    out["climatology"] = m.evaluate(y, m.climatology(freq, y.size), ret, horizon)
    every = {**probs, "ensemble": combined.probabilities}
    out["comparisons"] = {
        name: judge_calls(m.calls(p), y, hard).model_dump(mode="json") for name, p in every.items()
    }
    out["beats_baselines"] = {
        name: v["verdict"] == "beats" for name, v in out["comparisons"].items()
    }
    out["rows"] = int(y.size)
    return out


def degenerate_members(probabilities: Mapping[str, FloatArray]) -> dict[str, str]:
    """Return the members that call one class on every row, with the class they call."""
    out = {}
    for name, p in probabilities.items():
        called = m.calls(p)
        if called.size and np.all(called == called[0]):
            out[name] = CLASSES[int(called[0])]
    return out


def flag_degenerate(model: EnsembleModel, data: Mapping[str, Any]) -> dict[str, str]:
    """Zero the weight of members calling one class on every row of data (validation).

    Returns member -> the one class it calls. The ensemble's reasons say `degenerate`; when
    every member is degenerate the weights stay equal (there is nothing better to weigh).
    """
    if data["y"].size == 0:
        return {}
    probs = {
        name: member.predict_proba(data["windows"] if name == "lstm" else data["x"])
        for name, member in model.members.items()
    }
    flagged = degenerate_members(probs)
    model.ensemble.mark_degenerate(flagged)
    return flagged


def train_ensemble(
    series: SeriesData | Sequence[SeriesData],
    config: TrainConfig | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    report: Report = noop_report,
    cancel: Cancel = never_cancelled,
) -> EnsembleModel:
    """Train the configured members on the series and return the evaluated ensemble."""
    config = config or TrainConfig()
    items = [series] if isinstance(series, SeriesData) else list(series)
    prepared = _prepare(items, config)
    width = items[0].features.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{j}" for j in range(width)]
    if len(names) != width:
        raise ValueError(f"{len(names)} feature names for {width} features")
    check_cancel(cancel)

    train_x = np.concatenate([p.data.features[p.segments["train"]] for p in prepared])
    scaler = Standardizer.fit(train_x, clip=config.clip)
    z = [scaler.transform(p.data.features) for p in prepared]
    data = {seg: stack_segment(prepared, z, seg, config) for seg in ("train", "validation", "test")}
    train, val = data["train"], data["validation"]

    spans = {"lstm": float(config.lstm.epochs), "xgboost": 10.0}
    total = sum(spans[name] for name in config.models) + 1.0
    offset = 0.0
    members: dict[str, Member] = {}
    info: dict[str, Any] = {}
    for name in config.models:
        check_cancel(cancel)
        sub = _scaled_report(report, offset, spans[name], total)
        if name == "lstm":
            from services.predictor.ml.lstm import LSTMMember

            lstm = LSTMMember.train(
                train["windows"],
                train["y"],
                x_val=val["windows"] if val["y"].size else None,
                y_val=val["y"] if val["y"].size else None,
                config=config.lstm,
                seed=config.seed,
                report=sub,
                cancel=cancel,
            )
            members[name] = lstm
            info[name] = {"epochs_run": lstm.epochs_run, "parameters": lstm.parameters}
        else:
            from services.predictor.ml.xgboost_model import XGBoostMember

            members[name] = XGBoostMember.train(
                train["x"],
                train["y"],
                x_val=val["x"] if val["y"].size else None,
                y_val=val["y"] if val["y"].size else None,
                config=config.xgboost,
                seed=config.seed,
                report=sub,
                cancel=cancel,
            )
            info[name] = {"trees": config.xgboost.n_estimators}
        offset += spans[name]
        report(offset, total, f"{name}: trained")

    model = EnsembleModel(
        config=config,
        feature_names=names,
        scaler=scaler,
        members=members,
        ensemble=AdaptiveEnsemble(config.models, temperature=config.temperature),
        info=info,
    )
    majority = m.majority_class(train["y"].astype(np.float64))
    frequencies = m.class_frequencies(train["y"].astype(np.float64))
    degenerate = flag_degenerate(model, val)
    model.metrics = {
        seg: evaluate_segment(model, data[seg], majority, config.horizon, frequencies)
        for seg in ("validation", "test")
    }
    counts = np.bincount(train["y"], minlength=3)
    model.info.update(
        {
            "symbols": [p.data.symbol for p in prepared],
            "majority_class": majority,
            "train_class_counts": [int(c) for c in counts],
            "class_frequencies": [float(f) for f in frequencies],
            "degenerate": degenerate,
            "rows": {seg: int(data[seg]["y"].size) for seg in data},
            "segments": {
                p.data.symbol: {seg: _bounds(p, rows) for seg, rows in p.segments.items()}
                for p in prepared
            },
        }
    )
    report(total, total, "evaluated")
    return model


def _bounds(p: PreparedSeries, rows: IntArray) -> dict[str, Any]:
    """Return a segment's first and last bar (as times or bar numbers) and its row count."""
    if rows.size == 0:
        return {"first": None, "last": None, "rows": 0}
    if p.data.timestamps is None:
        return {"first": int(rows[0]), "last": int(rows[-1]), "rows": int(rows.size)}
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(p.data.timestamps)))
    return {
        "first": stamps[rows[0]].isoformat(),
        "last": stamps[rows[-1]].isoformat(),
        "rows": int(rows.size),
    }
