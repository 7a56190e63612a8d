"""Trading calendars from the maintained `exchange_calendars` library (NYSE = XNYS).

Symbols that do not trade on NYSE hours (FX pairs `=X`, crypto `-USD`) get their own simple
session rules so that gap detection does not flag weekends or holidays wrongly.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

import exchange_calendars as xcals
import numpy as np
import numpy.typing as npt
import pandas as pd

CalendarKind = Literal["XNYS", "weekdays", "daily"]

_CRYPTO = re.compile(r"-(USD|USDT|USDC|EUR|GBP|BTC|ETH)$")
CALENDAR_START = "1990-01-01"
# A fixed end (not the library's default of a year from today): the instants `market_status`
# accepts are then fixed too, and the OpenAPI schema states them.
CALENDAR_END = "2099-12-31"


def calendar_kind(symbol: str) -> CalendarKind:
    """Return which session rules a symbol trades on."""
    if symbol.endswith("=X"):
        return "weekdays"
    if _CRYPTO.search(symbol):
        return "daily"
    return "XNYS"


@lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    """Return the NYSE calendar (built once per process, ~0.1 s)."""
    return xcals.get_calendar("XNYS", start=CALENDAR_START, end=CALENDAR_END)


def sessions_between(symbol: str, start: date, end: date) -> pd.DatetimeIndex:
    """Return the UTC-midnight session dates of symbol's market between start and end."""
    kind = calendar_kind(symbol)
    if kind == "daily":
        days = pd.date_range(start, end, freq="D")
    elif kind == "weekdays":
        days = pd.bdate_range(start, end)
    else:
        cal = nyse()
        lo = max(pd.Timestamp(start), cal.first_session)
        hi = min(pd.Timestamp(end), cal.last_session)
        days = cal.sessions_in_range(lo, hi) if lo <= hi else pd.DatetimeIndex([])
    return pd.DatetimeIndex(days).tz_localize(None).as_unit("ns").tz_localize("UTC")


def last_completed_session(now: datetime | None = None) -> date:
    """Return the date of the last NYSE session whose close is at or before now."""
    ns = _utc(now or datetime.now(UTC)).value
    _, closes, sessions = _session_bounds()
    i = int(np.searchsorted(closes, ns, side="right")) - 1
    if i < 0:
        raise ValueError(f"{now} is before the calendar's first session close")
    return sessions[i].date()


# The calendar's instants come from its session opens and closes (two arrays of int64 ns, one
# entry per session), never from its table of every trading minute: exchange_calendars builds
# that table on first use of any minute method (`is_open_on_minute`, `next_open`, ...) for the
# whole 1990-2099 range, 1.5 s and 250 MB per process, measured as most of a fresh gateway's
# first answer and a third of its memory.
@lru_cache(maxsize=1)
def _session_bounds() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], pd.DatetimeIndex]:
    cal = nyse()
    return (
        np.asarray(cal.opens_nanos, dtype=np.int64),
        np.asarray(cal.closes_nanos, dtype=np.int64),
        cal.sessions,
    )


def _span_at(ts: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp, bool]:
    """Return (from, until, open): NYSE is open, or closed, throughout [from, until) around ts.

    A session's minutes are [open, close) (the library's default `side="left"`). ts must lie
    after the first session's open and before the last session's close.
    """
    opens, closes, _ = _session_bounds()
    i = int(np.searchsorted(closes, ts.value, side="right"))  # the first close after ts
    if opens[i] <= ts.value:
        return pd.Timestamp(opens[i], tz="UTC"), pd.Timestamp(closes[i], tz="UTC"), True
    return pd.Timestamp(closes[i - 1], tz="UTC"), pd.Timestamp(opens[i], tz="UTC"), False


def _in_range(ts: pd.Timestamp) -> bool:
    cal = nyse()
    return bool(cal.first_session_open <= ts <= cal.last_session_close - pd.Timedelta(days=7))


def _utc(now: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(now)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


def is_trading(symbol: str, now: datetime) -> bool:
    """Tell whether symbol's market is in a session at now (its daily bar is unfinished).

    NYSE symbols: regular hours of an NYSE session; FX (`=X`): weekdays (UTC); crypto: always.
    """
    kind = calendar_kind(symbol)
    ts = _utc(now)
    if kind == "daily":
        return True
    if kind == "weekdays":
        return ts.day_of_week < 5
    return _nyse_open(ts)


# (from, until, open): NYSE is open, or closed, throughout [from, until). A request asks
# "is it open now?" on every price; the calendar answers in ~1 ms, the span in ~1 us.
_SPAN: tuple[pd.Timestamp, pd.Timestamp, bool] | None = None


def _nyse_open(ts: pd.Timestamp) -> bool:
    global _SPAN
    span = _SPAN
    if span is not None and span[0] <= ts < span[1]:
        return span[2]
    if not _in_range(ts):
        return False
    _SPAN = span = _span_at(ts)
    return span[2]


def _next_open(
    ts: pd.Timestamp, since: pd.Timestamp, until: pd.Timestamp, is_open: bool
) -> pd.Timestamp:
    """Return the first open after ts, given ts's span (the library's `next_open`)."""
    if not is_open:
        return until
    return _span_at(until)[1]  # the closed span after this session ends at the next open


def last_final_day(symbol: str, now: datetime) -> date:
    """Return the date of symbol's latest daily bar that is final at now.

    A bar dated after it belongs to a session still trading (or not begun): it may change
    and is never stored. NYSE: the last session closed at or before now; FX and crypto: the
    last weekday, or day, before today (UTC).
    """
    kind = calendar_kind(symbol)
    ts = _utc(now)
    if kind == "XNYS":
        return last_completed_session(ts.to_pydatetime())
    day = ts.date() - timedelta(days=1)
    while kind == "weekdays" and day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def market_status(at: datetime | None = None, *, horizon_days: int = 365) -> dict[str, object]:
    """Return NYSE open/closed at an instant, the next open/close, holidays and early closes."""
    cal = nyse()
    ts = pd.Timestamp(at or datetime.now(UTC))
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    if not _in_range(ts) or ts == cal.first_session_open:
        raise ValueError(
            "instant outside the calendar's range "
            f"{cal.first_session_open.date()}..{cal.last_session_close.date()}"
        )
    since, until, is_open = _span_at(ts)
    session = ts.normalize().tz_localize(None)
    is_session = bool(cal.is_session(session))
    regular_close = cal.close_times[0][1]
    today_close = cal.session_close(session) if is_session else None
    end = min(session + pd.Timedelta(days=horizon_days), cal.last_session)
    weekdays = pd.bdate_range(session, end)
    sessions = cal.sessions_in_range(session, end)
    holidays = [d.date() for d in weekdays.difference(sessions)]
    early = [
        {"date": d.date(), "close": cal.session_close(d).to_pydatetime()}
        for d in cal.early_closes
        if session <= d <= end
    ]
    return {
        "exchange": "XNYS",
        "timezone": str(cal.tz),
        "at": ts.to_pydatetime(),
        "is_open": is_open,
        "is_trading_day": is_session,
        "session_open": cal.session_open(session).to_pydatetime() if is_session else None,
        "session_close": today_close.to_pydatetime() if today_close is not None else None,
        "is_early_close": bool(
            today_close is not None and today_close.tz_convert(cal.tz).time() < regular_close
        ),
        "next_open": _next_open(ts, since, until, is_open).to_pydatetime(),
        "next_close": (until if is_open else _span_at(until)[1]).to_pydatetime(),
        "upcoming_holidays": holidays,
        "upcoming_early_closes": early,
        "calendar_source": f"exchange_calendars {xcals.__version__}",
        "horizon_end": (session + timedelta(days=horizon_days)).date(),
    }
