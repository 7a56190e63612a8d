"""Timestamps as the predictor stores and compares them (int64 nanoseconds since the epoch,
UTC), the calendar span of a number of sessions, and the bars a version learnt from."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from services.predictor import repository as repo
from services.predictor.evaluation import TrainingRange, training_range


def calendar_days_for(bars: int) -> int:
    """Return calendar days that hold at least `bars` trading sessions (a safe estimate)."""
    return int(bars * 7 / 5 * 1.1) + 10


def as_utc(stamp: datetime) -> datetime:
    """Return a database timestamp as timezone-aware UTC (SQLite gives naive ones)."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def to_ns(stamp: datetime) -> int:
    """Return a timestamp as int64 nanoseconds since the epoch, UTC."""
    return int(pd.Timestamp(as_utc(stamp)).as_unit("ns").value)


def from_ns(value: int) -> datetime:
    """Return int64 nanoseconds since the epoch as an aware UTC datetime."""
    return pd.Timestamp(value, unit="ns", tz="UTC").to_pydatetime()


def version_range(row: repo.VersionRow) -> TrainingRange:
    """Return the bars a version learnt from (in sample), from its metadata."""
    return training_range(
        row.training_metrics,
        list(row.hyperparameters.get("symbols", [])),
        to_ns(row.data_start) if row.data_start else None,
        to_ns(row.data_end) if row.data_end else None,
    )


def from_ns_or_none(value: int | None) -> datetime | None:
    """Return from_ns(value), or None for None."""
    return from_ns(value) if value is not None else None
