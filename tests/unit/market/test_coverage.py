"""Coverage is never silent: short answers say so, empty ranges are 404 `no_data`, prices and
indicators carry `as_of` and `stale`, and `GET /symbols` lists what there is.

Real CSV data (every file but one ends 2023-10-27); the session counts are checked against
the exchange calendar directly (exchange_calendars' XNYS), not against the service's code.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import exchange_calendars as xcals
import pandas as pd
from fastapi.testclient import TestClient

from services.market.providers import CsvProvider
from tests.unit.market.conftest import market_service

LAST_CSV_BAR = "2023-10-27"


def xnys_sessions(start: str, end: str) -> int:
    """Return the NYSE sessions start..end inclusive, straight from exchange_calendars."""
    cal = xcals.get_calendar("XNYS", start="2000-01-01", end="2030-12-31")
    return len(cal.sessions_in_range(start, end))


def last_completed() -> str:
    """Return the last NYSE session closed by now."""
    cal = xcals.get_calendar("XNYS", start="2000-01-01", end="2030-12-31")
    return str(cal.minute_to_past_session(pd.Timestamp.now(tz="UTC")).date())


def test_a_history_shorter_than_asked_has_a_note_for_each_end(client: TestClient) -> None:
    # GOOG's file starts 2004-08-19 and ends 2023-10-27; ask 2004-01-02..2024-12-31.
    r = client.get("/historical/GOOG", params={"start": "2004-01-02", "end": "2024-12-31"})
    assert r.status_code == 200, r.text
    body = r.json()
    cov = body["coverage"]
    assert cov["first_bar"] == "2004-08-19" and cov["last_bar"] == LAST_CSV_BAR
    assert cov["sessions_missing_before"] == xnys_sessions("2004-01-02", "2004-08-18")
    assert cov["sessions_missing_after"] == xnys_sessions("2023-10-30", "2024-12-31") == 295
    assert cov["complete"] is False
    assert len(body["notes"]) == 2
    assert "start 2004-08-19" in body["notes"][0] and "2004-01-02" in body["notes"][0]
    assert "end 2023-10-27, 295 completed session(s)" in body["notes"][1]


def test_a_history_that_covers_the_asked_range_has_no_note(client: TestClient) -> None:
    # 2020-01-01 is a holiday and 2023-10-28 a Saturday: no session is missing at either end.
    r = client.get("/historical/AAPL", params={"start": "2020-01-01", "end": "2023-10-28"})
    body = r.json()
    assert body["coverage"]["complete"] is True and body["notes"] == []
    assert body["bars"][0]["timestamp"].startswith("2020-01-02")


def test_an_empty_range_is_a_404_no_data_naming_the_available_range(client: TestClient) -> None:
    r = client.get("/historical/AAPL", params={"start": "2024-01-01", "end": "2024-12-31"})
    assert r.status_code == 404, r.text
    problem = r.json()
    assert problem["code"] == "no_data" and problem["field"] == "start"
    assert "2003-10-30..2023-10-27" in problem["detail"]
    ind = client.get("/indicators/AAPL", params={"start": "2024-01-01", "end": "2024-12-31"})
    assert ind.status_code == 404 and ind.json()["code"] == "no_data"
    assert client.get("/historical/NOSUCH").json()["code"] == "symbol_not_found"


def test_price_and_indicators_carry_as_of_and_staleness_in_sessions(client: TestClient) -> None:
    age = xnys_sessions("2023-10-30", last_completed())
    price = client.get("/price/AAPL").json()
    assert (price["as_of"], price["stale"], price["age_sessions"]) == (LAST_CSV_BAR, True, age)
    rsi = client.get("/rsi/AAPL").json()
    assert (rsi["as_of"], rsi["stale"], rsi["age_sessions"]) == (LAST_CSV_BAR, True, age)

    window = {"indicators": "sma", "start": "2023-01-03", "end": "2024-06-28"}
    series = client.get("/indicators/AAPL", params=window).json()
    assert series["as_of"] == LAST_CSV_BAR and series["stale"] is True
    assert series["age_sessions"] == xnys_sessions("2023-10-30", "2024-06-28")
    assert series["notes"] and "end 2023-10-27" in series["notes"][0]
    inside = {"indicators": "sma", "start": "2023-01-03", "end": "2023-06-30"}
    past = client.get("/indicators/AAPL", params=inside).json()
    assert (past["stale"], past["age_sessions"], past["notes"]) == (False, 0, [])


def test_a_quote_of_the_last_completed_session_is_not_stale(tmp_path: Path, csv_dir: Path) -> None:
    async def quote_at(now: datetime, folder: str) -> tuple[date, bool, int]:
        service = await market_service(tmp_path / folder, CsvProvider(csv_dir), clock=lambda: now)
        try:
            q = await service.get_price("AAPL")
        finally:
            await service.db.dispose()
        return q.as_of, q.stale, q.age_sessions

    # Monday 2023-10-30 before the open: the last completed session is Friday 2023-10-27.
    monday = datetime(2023, 10, 30, 12, 0, tzinfo=UTC)
    assert asyncio.run(quote_at(monday, "monday")) == (date(2023, 10, 27), False, 0)
    # Thursday 2023-11-02 after the close: 4 sessions (Oct 30, 31, Nov 1, 2) are missing.
    thursday = datetime(2023, 11, 2, 22, 0, tzinfo=UTC)
    assert asyncio.run(quote_at(thursday, "thursday")) == (date(2023, 10, 27), True, 4)


def test_symbols_lists_each_symbol_with_its_first_and_last_bar(client: TestClient) -> None:
    r = client.get("/symbols")
    assert r.status_code == 200, r.text
    body = r.json()
    by_symbol = {s["symbol"]: s for s in body["symbols"]}
    aapl = by_symbol["AAPL"]
    assert (aapl["first_bar"], aapl["last_bar"], aapl["source"]) == (
        "2003-10-30",
        LAST_CSV_BAR,
        "csv",
    )
    assert aapl["stale"] is True
    assert by_symbol["GOOG"]["first_bar"] == "2004-08-19"
    assert "GOOG_BTPY" not in by_symbol  # a file not named like a ticker
    assert len(by_symbol) == 28
    assert body["last_completed_session"] == last_completed()
