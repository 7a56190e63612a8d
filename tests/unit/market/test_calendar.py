"""The calendar's instants (open now?, next open/close, last completed session) from session
bounds equal exchange_calendars' own minute methods, at random instants and at every edge."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from services.market import calendar


@pytest.fixture(scope="module")
def instants() -> list[pd.Timestamp]:
    """Random minutes 1990-2030, plus each open and close of 2024-2025 and a minute either side."""
    cal = calendar.nyse()
    rng = np.random.default_rng(7)
    lo = pd.Timestamp("1990-01-03", tz="UTC").value // 60_000_000_000
    hi = pd.Timestamp("2030-12-01", tz="UTC").value // 60_000_000_000
    out = [pd.Timestamp(int(m) * 60_000_000_000, tz="UTC") for m in rng.integers(lo, hi, 400)]
    sessions = cal.sessions_in_range("2024-01-01", "2025-12-31")
    minute = pd.Timedelta(minutes=1)
    for s in sessions:
        for edge in (cal.session_open(s), cal.session_close(s)):
            out += [edge - minute, edge, edge + minute]
    return out


def test_open_and_next_edges_equal_the_library(instants: list[pd.Timestamp]) -> None:
    cal = calendar.nyse()
    for ts in instants:
        status = calendar.market_status(ts.to_pydatetime(), horizon_days=1)
        assert status["is_open"] == cal.is_open_on_minute(ts), ts
        assert status["next_open"] == cal.next_open(ts).to_pydatetime(), ts
        assert status["next_close"] == cal.next_close(ts).to_pydatetime(), ts
        calendar._SPAN = None  # each instant on its own, then through the cached span
        assert calendar.is_trading("AAPL", ts.to_pydatetime()) == cal.is_open_on_minute(ts), ts


def test_the_span_cache_answers_as_the_library_for_instants_in_order(
    instants: list[pd.Timestamp],
) -> None:
    cal = calendar.nyse()
    for ts in sorted(instants):
        assert calendar.is_trading("MSFT", ts.to_pydatetime()) == cal.is_open_on_minute(ts), ts


def test_last_completed_session_is_the_last_close_at_or_before_now(
    instants: list[pd.Timestamp],
) -> None:
    cal = calendar.nyse()
    for ts in instants:
        got = calendar.last_completed_session(ts.to_pydatetime())
        closes = cal.closes[cal.closes <= ts]
        assert got == closes.index[-1].date(), ts


def test_outside_the_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the calendar"):
        calendar.market_status(datetime(2099, 12, 30, 15))
    assert calendar.is_trading("AAPL", datetime(1980, 1, 2, 15)) is False
