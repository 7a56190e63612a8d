"""Input and data validation: symbols, date ranges, and the quality of vendor bars."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from services.market.calendar import sessions_between
from shared.errors import ValidationProblemError

# Yahoo-style tickers: AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X, BTC-USD, VOD.L, 7203.T, ES=F
SYMBOL_RE = re.compile(r"^\^?[A-Z0-9]{1,10}(?:[.\-][A-Z0-9]{1,10}){0,2}(?:=[A-Z]{1,2})?$")
# Dates the service accepts, fixed so the OpenAPI schema can state them (a pattern).
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2099, 12, 31)
MAX_REPORTED = 50


def normalize_symbol(raw: str, *, field_name: str = "symbol") -> str:
    """Return the upper-cased ticker, or raise a 422 naming field_name."""
    symbol = raw.strip().upper()
    if not SYMBOL_RE.fullmatch(symbol):
        raise ValidationProblemError(
            f"Invalid symbol {raw[:40]!r}: expected a ticker such as AAPL, BRK-B, BRK.B, ^GSPC, "
            "EURUSD=X or BTC-USD",
            field=field_name,
        )
    return symbol


def check_date_range(start: date | None, end: date | None, *, today: date) -> None:
    """Raise a 422 naming the field when a date is absurd or the range is reversed.

    The bounds are fixed (EARLIEST_DATE..LATEST_DATE), never relative to today, so that the
    spec can say them; today is kept for callers.
    """
    for name, value in (("start", start), ("end", end)):
        if value is not None and not EARLIEST_DATE <= value <= LATEST_DATE:
            raise ValidationProblemError(
                f"{name}={value} is outside {EARLIEST_DATE}..{LATEST_DATE}", field=name
            )
    if start is not None and end is not None and start > end:
        raise ValidationProblemError(f"start={start} is after end={end}", field="start")


@dataclass
class QualityReport:
    """What validation found in a set of bars."""

    rows: int = 0
    rejected: list[dict[str, object]] = field(default_factory=list)
    rejected_count: int = 0
    outliers: list[dict[str, object]] = field(default_factory=list)
    outlier_count: int = 0
    gaps: list[dict[str, object]] = field(default_factory=list)
    missing_sessions: int = 0
    filled_rows: int = 0

    def as_dict(self) -> dict[str, object]:
        """Return the report as plain data."""
        return {
            "rows": self.rows,
            "rejected_count": self.rejected_count,
            "rejected": self.rejected[:MAX_REPORTED],
            "outlier_count": self.outlier_count,
            "outliers": self.outliers[:MAX_REPORTED],
            "missing_sessions": self.missing_sessions,
            "gaps": self.gaps[:MAX_REPORTED],
            "filled_rows": self.filled_rows,
            "ok": self.rejected_count == 0 and self.missing_sessions == 0,
        }


def reject_bad_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """Split bars into valid rows and rejected rows with the reason for each."""
    if frame.empty:
        return frame, []
    o, h, lo, c = (frame[k].to_numpy("float64") for k in ("open", "high", "low", "close"))
    v = frame["volume"].to_numpy("float64")
    adj = frame["adj_close"].to_numpy("float64")
    reasons = np.full(len(frame), "", dtype=object)
    checks = [
        (np.isnan(o) | np.isnan(h) | np.isnan(lo) | np.isnan(c), "missing price"),
        (np.isnan(v), "missing volume"),
        ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "non-positive price"),
        (v < 0, "negative volume"),
        (adj <= 0, "non-positive adjusted close"),
        ((h < np.fmax(o, c)) | (h < lo), "high below open/close/low"),
        (lo > np.fmin(o, c), "low above open/close"),
    ]
    for mask, reason in checks:
        reasons[mask & (reasons == "")] = reason
    bad = reasons != ""
    rejected = [
        {"timestamp": ts.isoformat(), "reason": r}
        for ts, r in zip(frame.index[bad], reasons[bad], strict=True)
    ]
    return frame.loc[~bad], rejected


def find_outliers(close: pd.Series, z_max: float = 3.0) -> list[dict[str, object]]:
    """Return bars whose close-to-close log return is beyond z_max standard deviations."""
    if len(close) < 3:
        return []
    r = np.log(close.to_numpy("float64"))
    r = np.diff(r)
    sd = r.std()
    if not np.isfinite(sd) or sd == 0:
        return []
    z = (r - r.mean()) / sd
    idx = np.flatnonzero(np.abs(z) > z_max)
    return [
        {
            "timestamp": close.index[i + 1].isoformat(),
            "return": float(np.expm1(r[i])),
            "zscore": round(float(z[i]), 3),
        }
        for i in idx
    ]


def find_gaps(
    symbol: str, index: pd.DatetimeIndex
) -> tuple[list[dict[str, object]], pd.DatetimeIndex]:
    """Return gap runs (expected sessions with no bar) and every missing session."""
    if len(index) < 2:
        return [], pd.DatetimeIndex([], tz="UTC")
    expected = sessions_between(symbol, index[0].date(), index[-1].date())
    missing = expected.difference(index)
    if missing.empty:
        return [], missing
    pos = expected.get_indexer(missing)
    runs: list[dict[str, object]] = []
    run_start = 0
    for i in range(1, len(pos) + 1):
        if i == len(pos) or pos[i] != pos[i - 1] + 1:
            first, last = missing[run_start], missing[i - 1]
            runs.append(
                {
                    "start": first.date().isoformat(),
                    "end": last.date().isoformat(),
                    "missing_sessions": i - run_start,
                }
            )
            run_start = i
    return runs, missing


def fill_short_gaps(
    frame: pd.DataFrame, missing: pd.DatetimeIndex, gaps: list[dict[str, object]], max_len: int = 2
) -> pd.DataFrame:
    """Forward-fill gaps of at most max_len sessions with flat bars marked `filled`."""
    frame = frame.assign(filled=False)
    short = [g for g in gaps if int(g["missing_sessions"]) <= max_len]  # type: ignore[call-overload]
    if not short:
        return frame
    wanted: set[pd.Timestamp] = set()
    for g in short:
        lo = pd.Timestamp(str(g["start"]), tz="UTC")
        hi = pd.Timestamp(str(g["end"]), tz="UTC")
        wanted.update(ts for ts in missing if lo <= ts <= hi)
    fill_index = pd.DatetimeIndex(sorted(wanted))
    full = frame.reindex(frame.index.union(fill_index))
    prev_close = full["close"].ffill()
    prev_adj = full["adj_close"].ffill()
    new = full["filled"].isna()
    for col in ("open", "high", "low", "close"):
        full.loc[new, col] = prev_close[new]
    full.loc[new, "adj_close"] = prev_adj[new]
    full.loc[new, "volume"] = 0.0
    full["filled"] = new.to_numpy() | full["filled"].fillna(False).astype(bool).to_numpy()
    full.index.name = frame.index.name
    return full


def quality_of(
    symbol: str, frame: pd.DataFrame, rejected: list[dict[str, object]]
) -> tuple[QualityReport, pd.DatetimeIndex]:
    """Build the quality report of clean bars (plus rows rejected while fetching them)."""
    report = QualityReport(rows=len(frame), rejected=rejected, rejected_count=len(rejected))
    if frame.empty:
        return report, pd.DatetimeIndex([], tz="UTC")
    report.outliers = find_outliers(frame["close"])
    report.outlier_count = len(report.outliers)
    report.gaps, missing = find_gaps(symbol, pd.DatetimeIndex(frame.index))
    report.missing_sessions = len(missing)
    return report, missing
