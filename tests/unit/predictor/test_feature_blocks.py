"""Feature windows sliced from year blocks: the window's rows, fetched once, never a later bar."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from services.market.app import create_app as market_app
from services.predictor.feature_blocks import RECENT_TTL_S, FeatureBlocks, day_ns
from services.predictor.market import MarketFeatures
from shared.http import ServiceClient, app_lifespan
from tests.conftest import market_settings

LEAD = 110  # calendar days of a window: the service's calendar_days_for(65)
T = TypeVar("T")


def with_market(tmp_path: Path, csv_dir: Path, use: Callable[[MarketFeatures], Awaitable[T]]) -> T:
    """Run `use` against a real market app (CSV bars, SQLite) called in-process over HTTP."""

    async def go() -> T:
        app = market_app(market_settings(tmp_path, csv_dir))
        async with app_lifespan(app):
            market = MarketFeatures(ServiceClient("market", app=app))
            try:
                return await use(market)
            finally:
                await market.aclose()

    return asyncio.run(go())


def test_a_window_has_the_rows_of_a_direct_request_and_nothing_later(
    tmp_path: Path, csv_dir: Path
) -> None:
    end = date(2020, 3, 6)

    async def use(market: MarketFeatures) -> None:
        blocks = FeatureBlocks(market, today=lambda: date(2024, 1, 1))
        window = await blocks.window("AAPL", end, LEAD)
        direct = await market.features("AAPL", end - timedelta(days=LEAD), end)
        assert window.names == direct.names
        np.testing.assert_array_equal(window.times, direct.times)
        np.testing.assert_array_equal(window.close, direct.close)
        # the market's warm-up starts earlier for the block: equal to the full history's values
        np.testing.assert_allclose(window.matrix, direct.matrix, rtol=1e-9, atol=1e-12)
        assert int(window.times[-1]) == day_ns(end) and window.times.size == direct.times.size
        (block,) = blocks._blocks.values()
        assert block.end == date(2020, 12, 31)  # the block reaches past `end`; the window not
        assert int(block.frame.times[-1]) > day_ns(end)

    with_market(tmp_path, csv_dir, use)


def test_a_bars_features_do_not_depend_on_the_as_of_that_asked(
    tmp_path: Path, csv_dir: Path
) -> None:
    async def use(market: MarketFeatures) -> None:
        days = [date(2019, 1, 2) + timedelta(days=7 * k) for k in range(52)]
        first = FeatureBlocks(market, today=lambda: date(2024, 1, 1))
        windows = [await first.window("AAPL", day, LEAD) for day in days]
        assert first._flights.started == 1  # one year, one fetch
        # another process, another day: the block ends at the date asked (another request)
        other = FeatureBlocks(market, today=lambda: days[30] + timedelta(days=2))
        late = await other.window("AAPL", days[30], LEAD)
        assert next(iter(other._blocks.values())).end == days[30]
        for window in windows:
            shared, mine, theirs = np.intersect1d(window.times, late.times, return_indices=True)
            if shared.size:
                np.testing.assert_array_equal(window.matrix[mine], late.matrix[theirs])
        await first.window("AAPL", date(2020, 6, 1), LEAD)
        assert first._flights.started == 2  # another year, another fetch

    with_market(tmp_path, csv_dir, use)


def test_concurrent_windows_of_a_year_share_one_fetch(tmp_path: Path, csv_dir: Path) -> None:
    async def use(market: MarketFeatures) -> None:
        blocks = FeatureBlocks(market, today=lambda: date(2024, 1, 1))
        days = [date(2018, 3, 1) + timedelta(days=k) for k in range(10)]
        windows = await asyncio.gather(*(blocks.window("AAPL", d, LEAD) for d in days))
        assert blocks._flights.started == 1
        assert all(w.times.size > 60 for w in windows)

    with_market(tmp_path, csv_dir, use)


def test_a_recent_block_ends_at_the_date_asked_and_expires_soon(
    tmp_path: Path, csv_dir: Path
) -> None:
    now = [1000.0]
    last = date(2023, 10, 27)  # AAPL's last bar in the shared data

    async def use(market: MarketFeatures) -> None:
        blocks = FeatureBlocks(market, clock=lambda: now[0], today=lambda: last)
        window = await blocks.window("AAPL", last, LEAD)
        assert int(window.times[-1]) == day_ns(last)
        (block,) = blocks._blocks.values()
        assert block.end == last and block.expires == now[0] + RECENT_TTL_S
        await blocks.window("AAPL", last - timedelta(days=3), LEAD)
        assert blocks._flights.started == 1
        await blocks.window("AAPL", last + timedelta(days=1), LEAD)  # past the block's end
        assert blocks._flights.started == 2
        now[0] += RECENT_TTL_S
        await blocks.window("AAPL", last, LEAD)  # expired
        assert blocks._flights.started == 3
        await blocks.window("AAPL", date(2023, 6, 1), LEAD)  # settled, but the block is not
        assert blocks._flights.started == 3

    with_market(tmp_path, csv_dir, use)


def test_a_year_without_bars_gives_an_empty_window(tmp_path: Path, csv_dir: Path) -> None:
    async def use(market: MarketFeatures) -> None:
        blocks = FeatureBlocks(market, today=lambda: date(2031, 1, 1))
        window = await blocks.window("AAPL", date(2030, 1, 5), LEAD)
        assert window.bars == 0 and window.matrix.shape == (0, len(window.names))

    with_market(tmp_path, csv_dir, use)


@pytest.mark.parametrize("kept", [1, 2])
def test_least_recently_used_blocks_are_dropped(tmp_path: Path, csv_dir: Path, kept: int) -> None:
    async def use(market: MarketFeatures) -> None:
        blocks = FeatureBlocks(market, max_blocks=kept, today=lambda: date(2024, 1, 1))
        for year in (2015, 2016, 2017):
            await blocks.window("AAPL", date(year, 6, 1), LEAD)
        assert [key[1].year + 1 for key in blocks._blocks] == [2018 - kept + k for k in range(kept)]

    with_market(tmp_path, csv_dir, use)
