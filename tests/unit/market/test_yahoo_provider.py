"""YahooProvider against a fake Yahoo: real yfinance code, canned HTTP built from real bars.

The fake replaces only the HTTP layer (the provider's `session=` seam): yfinance still does
its cookie/crumb handshake, time-zone lookup, JSON parsing and quirk fixes. The chart JSON
is built from the real AAPL CSV. yfinance's process-wide state (singleton session and crumb,
response lru_cache, on-disk caches) is reset per test, and an audit hook checks that no test
writes a file outside its tmp_path or opens a socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from curl_cffi.requests import Headers, Response
from curl_cffi.requests import exceptions as curl_errors
from yfinance import base as yf_base
from yfinance import cache as yf_cache
from yfinance import data as yf_data
from yfinance.config import YfConfig

from services.market.providers import BAR_COLUMNS, ProviderError, SymbolNotFoundError
from services.market.schemas import HistoricalData, PriceQuote
from services.market.settings import SHARED_CSV_DIR
from services.market.yahoo import RateLimiter, YahooProvider

AAPL_CSV = SHARED_CSV_DIR / "AAPL.csv"
NEW_YORK = "America/New_York"
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
RANGE_ROWS = {"1d": 1, "5d": 5, "1mo": 21}

# yfinance 1.7 calls sort_index(inplace=True), deprecated in pandas 3.1
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_index")


# --------------------------------------------------------------------------------------------
# Guard: no file written outside tmp_path, no socket opened (audit hooks see every thread).

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_FS_EVENTS = {"os.mkdir", "os.remove", "os.rename", "os.replace", "os.rmdir", "sqlite3.connect"}
_NET_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"}
_touched: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen = _touched
    if seen is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
        if writing and isinstance(path, str | bytes | os.PathLike):
            seen.append(("write", os.fsdecode(path)))
    elif event in _FS_EVENTS and args and isinstance(args[0], str | bytes | os.PathLike):
        seen.append((event, os.fsdecode(args[0])))
    elif event in _NET_EVENTS:
        seen.append((event, repr(args[1:2] if event == "socket.connect" else args[:1])))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def guard(tmp_path: Path) -> Iterator[list[tuple[str, str]]]:
    """Record file writes and network use during the test; fail on any outside tmp_path."""
    global _touched
    seen: list[tuple[str, str]] = []
    _touched = seen
    try:
        yield seen
    finally:
        _touched = None
    root = os.path.realpath(tmp_path)
    outside = [
        (event, path)
        for event, path in seen
        if event.startswith("socket.")
        or not (
            os.path.realpath(path).startswith(root + os.sep)
            or path.endswith(".pyc")  # a lazy import compiling bytecode
            or path.startswith("/dev/")
        )
    ]
    assert not outside, f"touched outside tmp_path or the network: {outside}"


@pytest.fixture(autouse=True)
def isolated_yfinance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test a fresh yfinance: new YfData singleton and crumb, caches in tmp_path."""
    # yf.set_cache_location() alone is not enough once a cache object exists (it keeps its
    # peewee database open at the old path), so reset the cache objects as well.
    cache_dir = str(tmp_path / "yfinance-cache")
    for manager in (yf_cache._TzDBManager, yf_cache._CookieDBManager, yf_cache._ISINDBManager):
        monkeypatch.setattr(manager, "_db", None)
        monkeypatch.setattr(manager, "_cache_dir", cache_dir)
    monkeypatch.setattr(yf_cache._TzCacheManager, "_tz_cache", None)
    monkeypatch.setattr(yf_cache._CookieCacheManager, "_Cookie_cache", None)
    monkeypatch.setattr(yf_cache._ISINCacheManager, "_isin_cache", None)
    monkeypatch.setattr(yf_data.SingletonMeta, "_instances", {})
    monkeypatch.setattr(yf_base, "_tz_info_fetch_ctr", 0)
    hide = YfConfig.debug.hide_exceptions
    yf_data.YfData.cache_get.cache_clear()
    yield
    yf_data.YfData.cache_get.cache_clear()
    YfConfig.debug.hide_exceptions = hide
    for manager in (yf_cache._TzDBManager, yf_cache._CookieDBManager, yf_cache._ISINDBManager):
        manager.close_db()


# --------------------------------------------------------------------------------------------
# The fake Yahoo.


@pytest.fixture(scope="module")
def csv_bars() -> pd.DataFrame:
    """Return the real AAPL rows, indexed by trading date (a missing file fails the test)."""
    if not AAPL_CSV.is_file():
        pytest.fail(f"shared market data missing: {AAPL_CSV}")
    raw = pd.read_csv(AAPL_CSV, dtype={"date": str})
    raw.index = pd.to_datetime(raw["date"])
    return raw.loc[:, list(BAR_COLUMNS)].astype("float64")


def expected(bars: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    """Return the CSV rows with start <= date <= end, as the provider should."""
    return bars.loc[start:end]


@dataclass
class Call:
    method: str
    url: str
    params: dict[str, Any]
    timeout: Any

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def is_history(self) -> bool:
        return self.path.startswith("/v8/finance/chart/") and "period1" in self.params


def response(url: str, status: int, body: str | bytes, content_type: str) -> Response:
    """Build a curl_cffi Response as the network would have returned it."""
    r = Response()
    r.url = url
    r.status_code = status
    r.ok = status < 400
    r.reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    r.content = body.encode() if isinstance(body, str) else body
    r.headers = Headers({"content-type": content_type})
    return r


def chart_error(url: str, status: int, code: str, description: str) -> Response:
    body = {"chart": {"result": None, "error": {"code": code, "description": description}}}
    return response(url, status, json.dumps(body), "application/json")


class FakeYahoo:
    """Yahoo's HTTP API for one symbol, served from bars; records every request.

    `script` lists what successive *history* chart requests get instead of data: an
    exception instance to raise, or an HTTP status. `hang_s` makes every chart request block
    that long, ignoring the timeout it is given (a hung socket).
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        symbol: str = "AAPL",
        *,
        script: list[Exception | int] | None = None,
        always: Exception | int | None = None,
        hang_s: float = 0.0,
    ) -> None:
        self.bars = bars
        self.symbol = symbol
        self.script = list(script or [])
        self.always = always
        self.hang_s = hang_s
        self.released = threading.Event()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        opens = [pd.Timestamp(f"{d.date()} 09:30", tz=NEW_YORK) for d in bars.index]
        self.ts = np.array([int(t.timestamp()) for t in opens], dtype=np.int64)

    def request(self, method: str, url: str, **kwargs: Any) -> Response:
        """Answer one request like Yahoo would."""
        call = Call(method, url, dict(kwargs.get("params") or {}), kwargs.get("timeout"))
        with self._lock:
            self.calls.append(call)
        host, path = urlsplit(url).hostname or "", call.path
        if host == "fc.yahoo.com":  # sets the A3 cookie (on a 404 page, really)
            return response(url, 404, "<html>Not Found</html>", "text/html")
        if path == "/v1/test/getcrumb":
            return response(url, 200, "fAkEcRuMb", "text/plain")
        if path.startswith("/v8/finance/chart/"):
            return self._chart(call, path.rsplit("/", 1)[-1])
        if host.endswith("guce.yahoo.com"):  # consent page: no form, so yfinance gives up
            return response(url, 200, "<html><body></body></html>", "text/html")
        return response(url, 404, '{"finance":{"result":null,"error":{}}}', "application/json")

    def release(self) -> None:
        """Let hung requests return (so worker threads end with the test)."""
        self.released.set()

    def _chart(self, call: Call, symbol: str) -> Response:
        if self.hang_s:
            self.released.wait(self.hang_s)
            raise curl_errors.Timeout("Operation timed out")
        if symbol != self.symbol:
            return chart_error(call.url, 404, "Not Found", "No data found, symbol may be delisted")
        if call.is_history:
            failure = self.script.pop(0) if self.script else self.always
            if isinstance(failure, Exception):
                raise failure
            if failure == 503:
                return response(call.url, 503, "<html>Service Unavailable</html>", "text/html")
            if failure == 429:
                return response(call.url, 429, "Edge: Too Many Requests", "text/plain")
            if isinstance(failure, int):
                return chart_error(call.url, failure, "Internal Server Error", "try again")
        if "range" in call.params:
            rows = np.arange(len(self.ts))[-RANGE_ROWS[call.params["range"]] :]
        else:
            lo, hi = int(call.params["period1"]), int(call.params["period2"])
            if hi <= self.ts[0]:
                description = f"Data doesn't exist for startDate = {lo}, endDate = {hi}"
                return chart_error(call.url, 400, "Bad Request", description)
            rows = np.flatnonzero((self.ts >= lo) & (self.ts < hi))
        body = {"chart": {"result": [self._result(rows)], "error": None}}
        return response(call.url, 200, json.dumps(body), "application/json")

    def _result(self, rows: np.ndarray) -> dict[str, Any]:
        last = pd.Timestamp(int(self.ts[-1]), unit="s", tz=NEW_YORK)
        offset = int(last.utcoffset().total_seconds())
        period = {
            "timezone": last.tzname(),
            "gmtoffset": offset,
            "start": int(self.ts[-1]),
            "end": int(self.ts[-1]) + 23400,
        }
        meta = {
            "currency": "USD",
            "symbol": self.symbol,
            "exchangeName": "NMS",
            "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": int(self.ts[-1]) + 23400,
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": last.tzname(),
            "exchangeTimezoneName": NEW_YORK,
            "regularMarketPrice": float(self.bars["close"].iloc[-1]),
            "chartPreviousClose": float(self.bars["close"].iloc[-2]),
            "priceHint": 2,
            "currentTradingPeriod": {"pre": period, "regular": period, "post": period},
            "dataGranularity": "1d",
            "range": "",
            "validRanges": VALID_RANGES,
        }
        result: dict[str, Any] = {"meta": meta}
        if len(rows) == 0:  # what Yahoo sends for a range without trading days
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
            return result
        b = self.bars.iloc[rows]
        result["timestamp"] = self.ts[rows].tolist()
        result["indicators"] = {
            "quote": [
                {
                    "open": b["open"].tolist(),
                    "high": b["high"].tolist(),
                    "low": b["low"].tolist(),
                    "close": b["close"].tolist(),
                    "volume": b["volume"].astype("int64").tolist(),
                }
            ],
            "adjclose": [{"adjclose": b["adj_close"].tolist()}],
        }
        return result

    def history_calls(self) -> list[Call]:
        return [c for c in self.calls if c.is_history]


def provider(fake: FakeYahoo, **kwargs: Any) -> YahooProvider:
    """Return a YahooProvider on the fake with test-speed backoff."""
    kwargs.setdefault("backoff_s", 0.0)
    return YahooProvider(session=fake, **kwargs)


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(BAR_COLUMNS)
    assert got.index.name == "timestamp"
    assert str(got.index.tz) == "UTC"
    assert (got.dtypes == "float64").all()
    assert (got.index == got.index.normalize()).all(), "bars must sit at UTC midnight"
    assert [t.date() for t in got.index] == [t.date() for t in want.index]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9)


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


async def market_service(tmp_path: Path, *providers: Any) -> Any:
    from services.market.providers import ProviderChain
    from services.market.service import MarketService
    from shared.cache import Cache
    from shared.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'svc.db'}")
    await db.migrate()
    return MarketService(db=db, cache=Cache(), providers=ProviderChain(list(providers)))


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
