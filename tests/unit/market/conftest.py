"""Helpers of the market tests: a fake Yahoo at the HTTP boundary, guards, a service on SQLite.

The fake replaces only the HTTP layer (the provider's `session=` seam): yfinance still does
its cookie/crumb handshake, time-zone lookup, JSON parsing and quirk fixes. The chart JSON
is built from real bars. `isolated_yfinance` resets yfinance's process-wide state (singleton
session and crumb, response lru_cache, on-disk caches) per test; `guard` (an audit hook)
fails a test that writes a file outside its tmp_path or opens a socket.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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

from services.market.providers import BAR_COLUMNS, ProviderChain
from services.market.service import MarketService
from services.market.settings import SHARED_CSV_DIR
from services.market.tables import SCHEMA
from services.market.yahoo import YahooProvider
from shared.cache import Cache
from shared.db import Database

AAPL_CSV = SHARED_CSV_DIR / "AAPL.csv"
NEW_YORK = "America/New_York"
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
RANGE_ROWS = {"1d": 1, "5d": 5, "1mo": 21}


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


@pytest.fixture
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


@pytest.fixture
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
        self.symbol = symbol
        self.script = list(script or [])
        self.always = always
        self.hang_s = hang_s
        self.released = threading.Event()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.set_bars(bars)

    def set_bars(self, bars: pd.DataFrame) -> None:
        """Serve these bars from now on (a price that moves during a session)."""
        opens = [pd.Timestamp(f"{d.date()} 09:30", tz=NEW_YORK) for d in bars.index]
        self.bars = bars
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


async def market_service(
    tmp_path: Path,
    *providers: Any,
    cache: Cache | None = None,
    chain: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MarketService:
    """Return a MarketService on a migrated SQLite file under tmp_path with these providers."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'svc.db'}")
    await db.migrate(SCHEMA)
    return MarketService(
        db=db,
        cache=cache or Cache(),
        providers=ProviderChain(list(providers), **(chain or {})),
        **kwargs,
    )
