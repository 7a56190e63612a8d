"""From a feature matrix and labels to model inputs: usable rows, a purged split, scaling.

Rows are bar indices. A row is usable when its label is defined and the ``context`` bars
ending at it (the LSTM's sequence length; 1 for a tabular model) have complete features.

:func:`purged_split` cuts the usable rows chronologically into train, validation and test
and purges each segment's tail: a row's label reads bars up to ``row + horizon``, so a row
is dropped when ``row + horizon`` reaches the first bar of a later segment (an embargo of
``horizon`` bars). No training label then sees a validation or test bar, and no validation
label a test bar. Several symbols split on common dates (:func:`split_boundaries`,
:func:`assign_segments`): the same rule with times instead of bar numbers.

:class:`Standardizer` is fitted on training rows only and is JSON state (exact round trip).
:func:`sequence_windows` stacks the ``seq_len`` scaled rows ending at each sample row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from services.predictor.ml.types import FloatArray, IntArray


def usable_rows(features: FloatArray, labels: FloatArray | None, context: int = 1) -> IntArray:
    """Return the rows whose label is defined and whose last `context` feature rows are complete."""
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (bars x features), got shape {features.shape}")
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    n = features.shape[0]
    complete = np.isfinite(features).all(axis=1)
    ok = np.zeros(n, dtype=bool)
    if n >= context:
        # the `context` rows ending at t are all complete
        runs = sliding_window_view(complete, context).all(axis=1)
        ok[context - 1 :] = runs
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have one value per bar ({n}), got {labels.shape}")
        ok &= np.isfinite(labels)
    return np.flatnonzero(ok).astype(np.int64)


@dataclass(frozen=True)
class Split:
    """Row indices (bar numbers) of the training, validation and test segments."""

    train: IntArray
    validation: IntArray
    test: IntArray
    horizon: int

    def to_dict(self) -> dict[str, Any]:
        """Return the segments' bounds and sizes (for metadata)."""

        def bounds(rows: IntArray) -> dict[str, int | None]:
            if rows.size == 0:
                return {"first": None, "last": None, "rows": 0}
            return {"first": int(rows[0]), "last": int(rows[-1]), "rows": int(rows.size)}

        return {
            "horizon": self.horizon,
            "train": bounds(self.train),
            "validation": bounds(self.validation),
            "test": bounds(self.test),
        }


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, frac in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be below 1")


def split_boundaries(
    times: Any, validation_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[int | None, int | None]:
    """Return the first time of the validation and of the test segment (None if empty).

    ``times`` are the (int64) times of every usable row, pooled over symbols; the last
    ``test_fraction`` of them (by count) is the test segment, the ``validation_fraction``
    before it the validation segment. A segment starts at a time, so rows of several
    symbols at one date always fall in the same segment.
    """
    _check_fractions(validation_fraction, test_fraction)
    t = np.sort(np.asarray(times, dtype=np.int64))
    n = t.size
    n_test = math.floor(n * test_fraction)
    n_val = math.floor(n * validation_fraction)
    test_start = int(t[n - n_test]) if n_test else None
    val_start = int(t[n - n_test - n_val]) if n_val else None
    if val_start is not None and val_start == test_start:
        val_start = None  # every validation row shares the test's first date
    return val_start, test_start


def assign_segments(
    row_times: Any,
    label_end_times: Any,
    boundaries: tuple[int | None, int | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return boolean masks (train, validation, test) of rows, purging labels that cross.

    A row belongs to the segment its own time falls in, and is dropped (purged) when its
    label's last bar (``label_end_times``) reaches the start of a later segment.
    """
    t = np.asarray(row_times, dtype=np.int64)
    end = np.asarray(label_end_times, dtype=np.int64)
    if t.shape != end.shape or (end < t).any():
        raise ValueError("label_end_times must match row_times and not precede them")
    val_start, test_start = boundaries
    big = np.iinfo(np.int64).max
    vs = val_start if val_start is not None else (test_start if test_start is not None else big)
    ts = test_start if test_start is not None else big
    train = (t < vs) & (end < vs)
    val = (t >= vs) & (t < ts) & (end < ts)
    test = t >= ts
    return train, val, test


def purged_split(
    rows: IntArray,
    horizon: int,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Split:
    """Split sorted rows of one series into train / validation / test, purged by horizon."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size > 1 and not (np.diff(rows) > 0).all()):
        raise ValueError("rows must be a strictly increasing 1-D array of bar indices")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    bounds = split_boundaries(rows, validation_fraction, test_fraction)
    train, val, test = assign_segments(rows, rows + horizon, bounds)
    return Split(train=rows[train], validation=rows[val], test=rows[test], horizon=int(horizon))


@dataclass(frozen=True)
class Standardizer:
    """Per-feature z-scoring fitted on training rows, clipped to +-clip; JSON round-trips."""

    mean: FloatArray
    scale: FloatArray
    clip: float = 10.0

    @classmethod
    def fit(cls, x: FloatArray, clip: float = 10.0) -> Standardizer:
        """Fit means and standard deviations (1 where a feature is constant) on rows of x."""
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"need a non-empty 2-D matrix to fit, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("rows to fit must be complete (no NaN)")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
        return cls(mean=mean, scale=scale, clip=float(clip))

    def transform(self, x: FloatArray) -> FloatArray:
        """Return (x - mean) / scale clipped to +-clip; NaN stays NaN."""
        if x.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"expected {self.mean.shape[0]} features, got {x.shape[-1]}")
        z = (x - self.mean) / self.scale
        return np.clip(z, -self.clip, self.clip)

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready state (floats round-trip exactly through json)."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Standardizer:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            mean=np.asarray(state["mean"], dtype=np.float64),
            scale=np.asarray(state["scale"], dtype=np.float64),
            clip=float(state["clip"]),
        )


def sequence_windows(x: FloatArray, rows: IntArray, seq_len: int) -> np.ndarray:
    """Return float32 windows (len(rows), seq_len, features): x[r - seq_len + 1 : r + 1]."""
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < seq_len - 1 or rows.max() >= x.shape[0]):
        raise ValueError(f"rows need {seq_len - 1} earlier bars and must lie inside x")
    if rows.size == 0:
        return np.empty((0, seq_len, x.shape[1]), dtype=np.float32)
    # windows[i] covers x[i : i + seq_len], i.e. ends at row i + seq_len - 1
    windows = sliding_window_view(x, seq_len, axis=0)  # (n - seq_len + 1, features, seq_len)
    picked = windows[rows - (seq_len - 1)]
    return np.ascontiguousarray(picked.transpose(0, 2, 1), dtype=np.float32)
