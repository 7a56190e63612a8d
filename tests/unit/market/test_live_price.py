"""The price during a session: from the provider, at most PRICE_TTL_S old, never stored unfinished.

Yahoo is the fake at the HTTP boundary (conftest.FakeYahoo) serving bars that end on the
injected "today"; the service's clock is a settable datetime and the cache's a settable
monotonic counter, so a session, its close and a cache expiry are steps, not waits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from services.market.calendar import sessions_between
from services.market.schemas import PriceQuote
from shared.cache import Cache
from tests.unit.market.conftest import FakeYahoo, market_service, provider

pytestmark = [
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_index"),
    pytest.mark.usefixtures("isolated_yfinance"),
]

TODAY = date(2024, 3, 13)  # a Wednesday; NYSE trades 13:30-20:00 UTC (EDT)
DURING = datetime(2024, 3, 13, 15, 0, tzinfo=UTC)
AFTER_CLOSE = datetime(2024, 3, 13, 21, 0, tzinfo=UTC)
TTL_S = 300


class Now:
    """The service's settable clock."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Ticks:
    """The cache's settable monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bars_until(today_close: float) -> pd.DataFrame:
    """Return 30 sessions of bars ending TODAY; the last (today's, unfinished) closes at
    today_close."""
    days = sessions_between("AAPL", date(2024, 1, 29), TODAY).tz_localize(None)
    closes = [90.0 + i * 0.1 for i in range(len(days) - 1)] + [today_close]
    frame = pd.DataFrame(
        {
            "open": closes,
            "high": [c + 1 for c in closes],
            "low": [c - 1 for c in closes],
            "close": closes,
            "adj_close": closes,
            "volume": [1_000_000.0] * len(days),
        },
        index=days,
    )
    return frame


def stored(tmp_path: Path) -> dict[str, float]:
    with sqlite3.connect(tmp_path / "db" / "svc.db") as conn:
        rows = conn.execute("select timestamp, close from market_data where symbol='AAPL'")
        return {str(ts)[:10]: close for ts, close in rows}


def test_the_price_follows_the_provider_during_a_session(tmp_path: Path) -> None:
    fake = FakeYahoo(bars_until(100.0))
    now, ticks = Now(DURING), Ticks()

    async def run() -> list[Any]:
        svc = await market_service(
            tmp_path, provider(fake), cache=Cache(clock=ticks), clock=now, price_ttl_s=TTL_S
        )
        seen: list[Any] = []
        try:
            seen.append(await svc.get_price("AAPL"))  # first fetch of the session: 100
            fake.set_bars(bars_until(110.0))  # the price moves
            ticks.t += 100
            seen.append(await svc.get_price("AAPL"))  # cached, 100 s old
            ticks.t += TTL_S  # past its TTL: never served, fetched again
            seen.append(await svc.get_price("AAPL"))
            seen.append(stored(tmp_path))
            history = await svc.get_history("AAPL", start=date(2024, 3, 1), end=TODAY)
            seen.append(history)
            seen.append(stored(tmp_path))
        finally:
            await svc.providers.aclose()
            await svc.db.dispose()
        return seen

    first, cached, moved, rows, history, rows_after_history = asyncio.run(run())
    assert (first.price, first.cache_level, first.source) == (100.0, "provider", "yfinance")
    assert first.timestamp.date() == TODAY
    assert (cached.price, cached.cache_level) == (100.0, "l1")
    assert (moved.price, moved.cache_level) == (110.0, "provider")
    # Today's unfinished bar is never stored; yesterday's final one is.
    assert str(TODAY) not in rows
    assert rows["2024-03-12"] == bars_until(100.0)["close"].iloc[-2]
    assert str(TODAY) not in rows_after_history
    assert [b.timestamp.date() for b in history.bars][-1] == date(2024, 3, 12)


def test_a_price_is_refreshed_ahead_of_expiry_and_never_older_than_the_ttl(
    tmp_path: Path,
) -> None:
    fake = FakeYahoo(bars_until(100.0))
    now, ticks = Now(DURING), Ticks()

    async def run() -> tuple[PriceQuote, PriceQuote, int, int]:
        svc = await market_service(
            tmp_path, provider(fake), cache=Cache(clock=ticks), clock=now, price_ttl_s=TTL_S
        )
        try:
            await svc.get_price("AAPL")
            fake.set_bars(bars_until(105.0))
            ticks.t += TTL_S * 0.9  # 30 s left: served now, refreshed in the background
            early = await svc.get_price("AAPL")
            await svc.cache.flights.drain()
            calls_after_refresh = len(fake.history_calls())
            ticks.t += TTL_S * 0.4  # 120 s after the refresh: its answer, live, not due
            later = await svc.get_price("AAPL")
            return early, later, calls_after_refresh, len(fake.history_calls())
        finally:
            await svc.providers.aclose()
            await svc.db.dispose()

    early, later, calls_after_refresh, calls_at_end = asyncio.run(run())
    assert (early.price, early.cache_level) == (100.0, "l1")
    assert (later.price, later.cache_level) == (105.0, "l1")
    assert calls_after_refresh == calls_at_end  # nobody waited on a fetch after the refresh


def test_after_the_close_the_final_bar_is_stored_and_served_from_the_database(
    tmp_path: Path,
) -> None:
    fake = FakeYahoo(bars_until(100.0))
    now, ticks = Now(DURING), Ticks()

    async def run() -> tuple[PriceQuote, PriceQuote, dict[str, float]]:
        svc = await market_service(
            tmp_path, provider(fake), cache=Cache(clock=ticks), clock=now, price_ttl_s=TTL_S
        )
        try:
            await svc.get_price("AAPL")  # during the session: 100, not stored
            fake.set_bars(bars_until(110.0))  # the closing price
            now.at = AFTER_CLOSE
            ticks.t += TTL_S + 1
            closed = await svc.get_price("AAPL")  # the session's final bar, stored now
            rows = stored(tmp_path)
            svc.cache.l1.clear()
            again = await svc.get_price("AAPL")
            return closed, again, rows
        finally:
            await svc.providers.aclose()
            await svc.db.dispose()

    closed, again, rows = asyncio.run(run())
    assert (closed.price, closed.cache_level) == (110.0, "provider")
    assert rows[str(TODAY)] == 110.0
    assert (again.price, again.cache_level, again.timestamp.date()) == (110.0, "database", TODAY)
