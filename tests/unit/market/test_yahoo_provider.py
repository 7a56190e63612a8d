"""YahooProvider against a fake Yahoo: real yfinance code, canned HTTP built from real bars.

The fake (tests/unit/market/conftest.py) replaces only the HTTP layer (the provider's
`session=` seam): yfinance still does its cookie/crumb handshake, time-zone lookup, JSON
parsing and quirk fixes. The chart JSON is built from the real AAPL CSV. yfinance's
process-wide state is reset per test, and an audit hook checks that no test writes a file
outside its tmp_path or opens a socket.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from curl_cffi.requests import exceptions as curl_errors
from yfinance import data as yf_data
from yfinance.config import YfConfig

from services.market.providers import BAR_COLUMNS, ProviderError, SymbolNotFoundError
from services.market.schemas import HistoricalData, PriceQuote
from services.market.yahoo import RateLimiter, YahooProvider
from tests.unit.market.conftest import (
    NEW_YORK,
    FakeYahoo,
    assert_bars_equal,
    expected,
    market_service,
    provider,
)

# yfinance 1.7 calls sort_index(inplace=True), deprecated in pandas 3.1
pytestmark = [
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_index"),
    pytest.mark.usefixtures("guard", "isolated_yfinance"),
]


# --------------------------------------------------------------------------------------------
# Tests.


def test_history_equals_the_csv_rows(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars)

    async def run() -> pd.DataFrame:
        p = provider(fake)
        try:  # March 2020 spans the DST switch (09:30 EST vs EDT)
            return await p.fetch_history("AAPL", date(2020, 2, 24), date(2020, 3, 20))
        finally:
            await p.aclose()

    got = asyncio.run(run())
    assert_bars_equal(got, expected(csv_bars, "2020-02-24", "2020-03-20"))
    assert len(got) == 20
    history = fake.history_calls()
    assert len(history) == 1  # the time-zone lookup is a separate range=1d chart call
    # yfinance's end is exclusive: the provider asks up to midnight after the end date
    end = pd.Timestamp("2020-03-21", tz=NEW_YORK)
    assert int(history[0].params["period2"]) == int(end.timestamp())
    # every request yfinance made got the provider's budget, not its own 10 s / 30 s
    assert all(isinstance(c.timeout, float) and c.timeout <= 5.0 for c in fake.calls)
    assert {urlsplit(c.url).hostname for c in fake.calls} <= {
        "fc.yahoo.com",
        "query1.finance.yahoo.com",
        "query2.finance.yahoo.com",
    }


def test_end_date_is_inclusive(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars)

    async def run() -> tuple[pd.DataFrame, ...]:
        p = provider(fake)
        one_day = await p.fetch_history("AAPL", date(2021, 6, 4), date(2021, 6, 4))
        to_friday = await p.fetch_history("AAPL", date(2021, 5, 31), date(2021, 6, 4))
        weekend = await p.fetch_history("AAPL", date(2021, 6, 5), date(2021, 6, 6))
        before_ipo = await p.fetch_history("AAPL", date(1999, 1, 4), date(1999, 1, 8))
        return one_day, to_friday, weekend, before_ipo

    one_day, to_friday, weekend, before_ipo = asyncio.run(run())
    assert_bars_equal(one_day, expected(csv_bars, "2021-06-04", "2021-06-04"))
    assert len(one_day) == 1
    assert_bars_equal(to_friday, expected(csv_bars, "2021-05-31", "2021-06-04"))
    assert to_friday.index[-1] == pd.Timestamp("2021-06-04", tz="UTC")
    for empty in (weekend, before_ipo):  # a valid symbol without bars: empty, no error
        assert empty.empty
        assert list(empty.columns) == list(BAR_COLUMNS)


def test_fetch_latest_returns_the_last_five_bars(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars)
    got = asyncio.run(provider(fake).fetch_latest("AAPL"))
    assert_bars_equal(got, csv_bars.iloc[-5:])
    assert got.index[-1] == pd.Timestamp("2023-10-27", tz="UTC")


def test_retries_transient_failures_then_succeeds(csv_bars: pd.DataFrame) -> None:
    # Attempt 1 times out. Attempt 2 gets 503 -- twice, because yfinance itself repeats a
    # >= 400 request once after refreshing cookie and crumb. Attempt 3 gets data.
    timeout = curl_errors.Timeout("Operation timed out after 5000 ms")
    fake = FakeYahoo(csv_bars, script=[timeout, 503, 503])

    async def run() -> tuple[pd.DataFrame, YahooProvider]:
        p = provider(fake)
        return await p.fetch_history("AAPL", date(2022, 1, 3), date(2022, 1, 31)), p

    got, p = asyncio.run(run())
    assert_bars_equal(got, expected(csv_bars, "2022-01-03", "2022-01-31"))
    assert p.limiter.granted == 3  # exactly three attempts, each one request of the budget
    assert len(fake.history_calls()) == 4


@pytest.mark.parametrize(
    "failure",
    [
        curl_errors.Timeout("Operation timed out"),
        curl_errors.ConnectionError("Failed to connect to query2.finance.yahoo.com"),
        500,
        503,
        429,
    ],
    ids=["timeout", "connection", "500", "503", "429"],
)
def test_gives_up_after_max_attempts(csv_bars: pd.DataFrame, failure: Exception | int) -> None:
    fake = FakeYahoo(csv_bars, always=failure)
    p = provider(fake)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        asyncio.run(p.fetch_history("AAPL", date(2022, 1, 3), date(2022, 1, 31)))
    assert time.monotonic() - started < 3.0
    error = caught.value
    assert "Yahoo Finance" in error.detail and "after 3 attempts" in error.detail
    assert error.extra == {"attempts": 3}
    assert error.__cause__ is not None
    assert p.limiter.granted == 3
    named = f"HTTP {failure}" if isinstance(failure, int) else type(failure).__name__
    # The answer speaks the user's terms; the URL and the transport's error go to the log.
    assert error.log_detail is not None
    assert named in error.log_detail and "/v8/finance/chart/AAPL" in error.log_detail
    assert "/v8/" not in error.detail and named not in error.detail


def test_timeout_is_enforced_even_when_the_transport_hangs(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars, hang_s=10.0)  # ignores the timeout it is given

    async def run() -> float:
        p = provider(fake, timeout_s=0.2)
        started = time.monotonic()
        try:
            with pytest.raises(ProviderError) as caught:
                await p.fetch_history("AAPL", date(2022, 1, 3), date(2022, 1, 31))
            assert "no answer within 0.2 s" in (caught.value.log_detail or "")
            assert p.limiter.granted == 3
            return time.monotonic() - started
        finally:
            fake.release()

    assert asyncio.run(run()) < 1.5


def test_unknown_symbol_is_not_found_and_not_retried(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars)
    p = provider(fake)
    with pytest.raises(SymbolNotFoundError) as caught:
        asyncio.run(p.fetch_history("NOSUCHTICKER", date(2022, 1, 3), date(2022, 1, 31)))
    assert caught.value.field == "symbol"
    assert "NOSUCHTICKER" in caught.value.detail and "delisted" in caught.value.detail
    assert p.limiter.granted == 1
    with pytest.raises(SymbolNotFoundError):
        asyncio.run(p.fetch_latest("NOSUCHTICKER"))
    assert p.limiter.granted == 2


def test_rate_limiter_waits_for_the_window_and_never_exceeds_it() -> None:
    async def run() -> tuple[list[float], float]:
        limiter = RateLimiter(max_requests=3, period_s=0.5)
        started = time.monotonic()
        for _ in range(3):
            await limiter.acquire()
        assert time.monotonic() - started < 0.2
        assert limiter.available() == 0
        await limiter.acquire()  # the 4th waits until the first grant leaves the window
        fourth = time.monotonic() - started
        grants: list[float] = []

        async def take() -> None:
            await limiter.acquire()
            grants.append(time.monotonic())

        await asyncio.gather(*(take() for _ in range(5)))
        return grants, fourth

    grants, fourth = asyncio.run(run())
    assert 0.45 <= fourth < 1.5
    assert len(grants) == 5
    # with the 4th grant included, any 4 consecutive grants span at least the window
    assert all(b - a >= 0.5 - 0.02 for a, b in zip(grants, grants[3:], strict=False))


def test_writes_nothing_outside_tmp_path(
    csv_bars: pd.DataFrame, tmp_path: Path, guard: list[tuple[str, str]]
) -> None:
    fake = FakeYahoo(csv_bars)

    async def run() -> None:
        p = provider(fake)
        await p.fetch_history("AAPL", date(2020, 1, 2), date(2020, 1, 31))
        with pytest.raises(SymbolNotFoundError):
            await p.fetch_latest("NOPE")
        await p.aclose()

    asyncio.run(run())
    assert (tmp_path / "yfinance-cache" / "tkr-tz.db").is_file()  # yfinance's tz cache
    (tmp_path / "probe.txt").write_text("the audit hook is live")
    assert ("write", str(tmp_path / "probe.txt")) in guard
    # the guard fixture fails the test if anything else was written or a socket was used


def test_concurrent_providers_each_reach_their_own_transport(csv_bars: pd.DataFrame) -> None:
    # yfinance holds one session for the whole process; routing must not depend on it.
    doubled = csv_bars.assign(**{c: csv_bars[c] * 2 for c in BAR_COLUMNS})
    plain, twice = FakeYahoo(csv_bars), FakeYahoo(doubled)

    async def run() -> list[pd.DataFrame]:
        a, b = provider(plain), provider(twice)
        months = [(date(2019, m, 1), date(2019, m, 28)) for m in range(1, 7)]
        jobs = [(a if i % 2 else b).fetch_history("AAPL", s, e) for i, (s, e) in enumerate(months)]
        return list(await asyncio.gather(*jobs))

    for i, got in enumerate(asyncio.run(run())):
        source = csv_bars if i % 2 else doubled
        assert_bars_equal(got, expected(source, f"2019-{i + 1:02d}-01", f"2019-{i + 1:02d}-28"))
    assert len(plain.history_calls()) == 3 and len(twice.history_calls()) == 3


def test_aclose_detaches_the_session_from_yfinance(csv_bars: pd.DataFrame) -> None:
    p = provider(FakeYahoo(csv_bars))
    asyncio.run(p.fetch_latest("AAPL"))
    assert yf_data.YfData()._session is p._session
    asyncio.run(p.aclose())
    assert yf_data.YfData()._session is not p._session
    assert p._session._closed


def test_failures_are_caught_even_if_yfinance_hides_exceptions(csv_bars: pd.DataFrame) -> None:
    fake = FakeYahoo(csv_bars, always=503)
    p = provider(fake)
    YfConfig.debug.hide_exceptions = True  # yfinance would log and return an empty frame
    with pytest.raises(ProviderError) as caught:
        asyncio.run(p.fetch_history("AAPL", date(2022, 1, 3), date(2022, 1, 31)))
    assert "HTTP 503" in (caught.value.log_detail or "")
    assert p.limiter.granted == 3


# --------------------------------------------------------------------------------------------
# The provider inside the market service: Yahoo's data flows through validation and storage,
# and a Yahoo outage falls back to the next provider in the chain.


def test_service_stores_yahoo_bars_and_serves_them_again(
    csv_bars: pd.DataFrame, tmp_path: Path
) -> None:
    fake = FakeYahoo(csv_bars)

    async def run() -> tuple[HistoricalData, HistoricalData, int]:
        svc = await market_service(tmp_path, provider(fake))
        first = await svc.get_history("AAPL", start=date(2021, 6, 1), end=date(2021, 6, 30))
        calls = len(fake.history_calls())
        svc.cache.l1.clear()
        again = await svc.get_history("AAPL", start=date(2021, 6, 7), end=date(2021, 6, 25))
        assert len(fake.history_calls()) == calls  # stored rows answer, Yahoo is not asked
        await svc.providers.aclose()
        await svc.db.dispose()
        return first, again, calls

    first, again, calls = asyncio.run(run())
    want = expected(csv_bars, "2021-06-01", "2021-06-30")
    assert [b.timestamp.date() for b in first.bars] == [d.date() for d in want.index]
    np.testing.assert_allclose([b.close for b in first.bars], want["close"], atol=1e-9)
    assert first.metadata.source == "yfinance"
    assert first.metadata.cache_level == "provider"
    assert again.metadata.cache_level == "database"
    assert calls == 1


def test_yahoo_outage_falls_back_to_csv(csv_bars: pd.DataFrame, tmp_path: Path) -> None:
    from services.market.providers import CsvProvider
    from services.market.settings import SHARED_CSV_DIR

    down = FakeYahoo(csv_bars, hang_s=5.0)  # every Yahoo request hangs

    async def run() -> PriceQuote:
        yahoo = provider(down, timeout_s=0.2, max_attempts=2)
        svc = await market_service(tmp_path, yahoo, CsvProvider(SHARED_CSV_DIR))
        try:
            return await svc.get_price("AAPL")
        finally:
            down.release()
            await svc.providers.aclose()
            await svc.db.dispose()

    started = time.monotonic()
    quote = asyncio.run(run())
    assert time.monotonic() - started < 3.0
    assert quote.source == "csv"
    assert quote.price == pytest.approx(csv_bars["close"].iloc[-1])


def test_an_outage_answer_names_no_path_and_no_transport_error(
    csv_bars: pd.DataFrame, tmp_path: Path
) -> None:
    """With Yahoo down and a symbol no CSV has, the user reads what failed, not internals."""
    from services.market.providers import CsvProvider, ProviderError
    from services.market.settings import SHARED_CSV_DIR

    async def run() -> ProviderError:
        svc = await market_service(
            tmp_path,
            CsvProvider(SHARED_CSV_DIR),
            provider(FakeYahoo(csv_bars, symbol="ZZZZ", always=503)),
        )
        try:
            with pytest.raises(ProviderError) as caught:
                await svc.get_history("ZZZZ", start=date(2022, 1, 3), end=date(2022, 1, 31))
            return caught.value
        finally:
            await svc.providers.aclose()
            await svc.db.dispose()

    error = asyncio.run(run())
    public = error.to_problem(error_id="abc123").model_dump_json()
    assert "ZZZZ" in error.detail and "csv, yfinance" in error.detail
    for internal in (str(SHARED_CSV_DIR), "/v8/finance", "HTTP 503"):
        assert internal not in public
        assert error.log_detail is not None
    assert str(SHARED_CSV_DIR) in error.log_detail and "HTTP 503" in error.log_detail
