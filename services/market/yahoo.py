"""Yahoo Finance provider, built on the ``yfinance`` package.

How it drives yfinance
----------------------
yfinance is blocking and keeps process-wide state: ``YfData`` is a singleton holding *one*
HTTP session, the cookie and the crumb, plus an ``lru_cache`` of raw responses; ticker time
zones and cookies are persisted under the user's cache folder. So the provider

* runs each yfinance call in a worker thread (``asyncio.to_thread``) under
  ``asyncio.timeout(timeout_s)`` (the ``wait_for`` of 3.11), one budget per attempt, cut to
  what is left of the request's deadline (:func:`services.market.providers.deadline`); no
  retry starts, and no backoff waits, past that deadline;
* hands yfinance a :class:`YahooSession` (``yf.Ticker(symbol, session=...)``). yfinance only
  accepts real curl_cffi or requests sessions, so this is a ``curl_cffi`` ``Session`` subclass
  whose ``request`` -- the one method every ``get``/``post`` yfinance makes goes through -- is
  the HTTP seam: it forwards to the injected transport (any object with
  ``request(method, url, **kwargs)`` returning a curl_cffi ``Response``; tests pass a fake that
  serves Yahoo's chart JSON) or, with none, to curl itself. It also clamps each request's
  timeout to what is left of the attempt (yfinance hard-codes 10 s for the time-zone lookup
  and 30 s for the cookie fetch) and records every status code and transport error of the
  attempt. The attempt is found through a context variable, so routing stays right even when
  another provider instance has swapped yfinance's singleton session in the meantime;
* classifies failures from that record, not from yfinance's exceptions, which blur causes (a
  timed-out time-zone lookup surfaces as "possibly delisted", a 5xx as a JSON decode error):
  a chart-endpoint 404 ("No data found, symbol may be delisted") is an unknown symbol, never
  retried; timeouts, connection errors, 429 and 5xx are transient and retried; "Data doesn't
  exist" / "No data found for this date range" is an empty frame;
* clears yfinance's response ``lru_cache`` before each attempt: for past date ranges it would
  replay a cached 5xx to the retry, and the service caches only validated data anyway;
* sets ``yf.config.debug.hide_exceptions = False`` (process-wide), so yfinance raises instead
  of logging an error and returning an empty frame that looks like "no data".

Calling Yahoo's chart endpoint directly with httpx would be simpler, but the product owner
named yfinance and this seam drives the real library end to end (cookie and crumb handshake,
time-zone lookup, JSON parsing, Yahoo quirk fixes) while a fake replaces only the HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol, cast

import pandas as pd
import yfinance as yf
from curl_cffi import requests as curl_requests
from curl_cffi.requests import exceptions as curl_errors
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential,
)
from tenacity.stop import stop_base
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from services.market.providers import (
    BAR_COLUMNS,
    ProviderError,
    SymbolNotFoundError,
    empty_bars,
    remaining_s,
)

log = logging.getLogger(__name__)

CHART_PATH = "/v8/finance/chart/"
# yfinance's column names for the bar columns, in BAR_COLUMNS order.
_YF_COLUMNS = ("Open", "High", "Low", "Close", "Adj Close", "Volume")
# Yahoo's wording when a valid symbol has no bars in the asked range (400 or 404).
_EMPTY_RANGE_MARKERS = ("data doesn't exist", "date range")


class Transport(Protocol):
    """What YahooSession forwards to: a curl_cffi ``Session`` or a test fake."""

    def request(self, method: str, url: str, **kwargs: Any) -> curl_requests.Response:
        """Send one HTTP request and return its response."""
        ...


@dataclass
class _Exchange:
    """One HTTP request yfinance made during an attempt, and how it ended."""

    method: str
    url: str
    status: int | None = None
    error: BaseException | None = None
    yahoo_error: str | None = None

    @property
    def is_chart(self) -> bool:
        return CHART_PATH in self.url

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 400)

    @property
    def transient(self) -> bool:
        if self.error is not None:
            return _is_transient_exception(self.error)
        return self.status is not None and (self.status == 429 or self.status >= 500)

    @property
    def target(self) -> str:
        return f"{self.method} {self.url.split('?', 1)[0]}"  # no query: it holds the crumb

    def describe(self) -> str:
        if self.error is not None:
            return f"{type(self.error).__name__} on {self.target}: {self.error}"
        detail = f" ({self.yahoo_error})" if self.yahoo_error else ""
        return f"HTTP {self.status} from {self.target}{detail}"


@dataclass
class _Attempt:
    """The context of one yfinance call: where requests go, its deadline, what happened."""

    transport: Transport | None
    deadline: float
    exchanges: list[_Exchange] = field(default_factory=list)


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "yahoo_attempt", default=None
)


def _chart_error(response: curl_requests.Response) -> str | None:
    """Return Yahoo's ``chart.error`` text of a failed chart response, if it has one."""
    try:
        error = response.json()["chart"]["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict):
        return None
    return f"{error.get('code')}: {error.get('description')}"


def _clamp(timeout: object, remaining: float) -> float:
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return min(float(timeout), remaining)
    return remaining


class YahooSession(curl_requests.Session):
    """A curl_cffi session yfinance accepts; it routes, bounds and records every request."""

    def __init__(self, transport: Transport | None = None) -> None:
        super().__init__(impersonate="chrome")
        self.transport = transport

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Send through the current attempt's transport with its remaining time budget."""
        attempt = _ATTEMPT.get()
        if attempt is None:  # yfinance used outside a provider call
            return self._send(self.transport, method, url, *args, **kwargs)
        exchange = _Exchange(method, url)
        attempt.exchanges.append(exchange)
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            exchange.error = curl_errors.Timeout("attempt deadline passed before sending")
            raise exchange.error
        kwargs["timeout"] = _clamp(kwargs.get("timeout"), remaining)
        try:
            response = self._send(attempt.transport, method, url, *args, **kwargs)
        except Exception as e:
            exchange.error = e
            raise
        exchange.status = response.status_code
        if exchange.is_chart and response.status_code >= 400:
            exchange.yahoo_error = _chart_error(response)
        return response

    def _send(self, transport: Transport | None, method: str, url: str, *args: Any, **kw: Any):
        if transport is None:
            return super().request(cast(Any, method), url, *args, **kw)
        return transport.request(method, url, *args, **kw)


class RateLimiter:
    """Sliding-window limiter: at most `max_requests` grants in any `period_s` seconds."""

    def __init__(self, max_requests: int, period_s: float) -> None:
        if max_requests < 1 or period_s <= 0:
            raise ValueError("max_requests must be >= 1 and period_s > 0")
        self.max_requests = max_requests
        self.period_s = period_s
        self.granted = 0
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.period_s:
            self._times.popleft()

    def available(self) -> int:
        """Return how many requests could be granted right now without waiting."""
        self._prune(time.monotonic())
        return self.max_requests - len(self._times)

    async def acquire(self) -> None:
        """Wait until the window has room, then take one request from the budget."""
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = time.monotonic()
                self._prune(now)
                if len(self._times) < self.max_requests:
                    self._times.append(now)
                    self.granted += 1
                    return
                await asyncio.sleep(self._times[0] + self.period_s - now)


class _OutOfTime(stop_base):
    """Stop retrying once the request's deadline has passed."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        left = remaining_s()
        return left is not None and left <= 0


class _TransientError(Exception):
    """An attempt failed in a way worth retrying."""


def _to_bars(raw: pd.DataFrame) -> pd.DataFrame:
    """Return yfinance's history frame as bars at UTC midnight of each trading date."""
    if raw is None or raw.empty:
        return empty_bars()
    missing = [c for c in _YF_COLUMNS if c not in raw.columns]
    if missing:
        raise ProviderError(
            "Yahoo Finance answered with data the service cannot read.",
            log_detail=f"yfinance returned a frame without columns {missing}",
        )
    index = pd.DatetimeIndex(raw.index)
    if index.tz is not None:  # exchange-local midnight: keep the local date, drop the zone
        index = index.tz_localize(None)
    days = index.normalize().tz_localize("UTC").as_unit("us").rename("timestamp")
    frame = pd.DataFrame(
        {
            col: pd.to_numeric(raw[src], errors="coerce").to_numpy(dtype="float64")
            for col, src in zip(BAR_COLUMNS, _YF_COLUMNS, strict=True)
        },
        index=days,
    )
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def _is_transient_exception(e: BaseException) -> bool:
    """Tell whether an exception means "try again later" (timeout, connection, 429, 5xx)."""
    if isinstance(e, YFRateLimitError | TimeoutError | ConnectionError):
        return True
    if isinstance(e, curl_errors.HTTPError):  # raise_for_status(), or an HTTP/2 stream error
        status = getattr(getattr(e, "response", None), "status_code", None)
        return status is None or status == 429 or status >= 500
    return isinstance(e, curl_errors.Timeout | curl_errors.ConnectionError | curl_errors.ProxyError)


class YahooProvider:
    """Daily bars from Yahoo Finance through yfinance, with retries, timeouts and rate limit."""

    name = "yfinance"
    remote = True

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        max_requests: int = 2000,
        period_s: float = 3600.0,
        session: Transport | None = None,
    ) -> None:
        if timeout_s <= 0 or max_attempts < 1 or backoff_s < 0:
            raise ValueError("need timeout_s > 0, max_attempts >= 1 and backoff_s >= 0")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.limiter = RateLimiter(max_requests, period_s)
        self._transport = session
        self._session = YahooSession(session)
        # Raise instead of "log and return an empty frame" (process-wide yfinance setting).
        yf.config.debug.hide_exceptions = False

    async def fetch_history(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Return daily bars with `start <= day <= end` from Yahoo."""
        if end < start:
            return empty_bars()
        # yfinance's `end` is exclusive (midnight, exchange time): ask for the day after.
        kwargs = {"start": start.isoformat(), "end": (end + timedelta(days=1)).isoformat()}
        frame = await self._fetch(symbol, kwargs)
        lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
        return frame.loc[(frame.index >= lo) & (frame.index <= hi)]

    async def fetch_latest(self, symbol: str) -> pd.DataFrame:
        """Return the last five daily bars from Yahoo."""
        # A month, not "5d", so a long market closure still leaves at least two bars.
        return (await self._fetch(symbol, {"period": "1mo"})).iloc[-5:]

    async def aclose(self) -> None:
        """Close the curl session, first detaching it from yfinance's singleton."""
        if getattr(YfData(), "_session", None) is self._session:
            YfData(session=YahooSession())  # a plain pass-through session
        self._session.close()

    async def _fetch(self, symbol: str, window: dict[str, str]) -> pd.DataFrame:
        backoff = wait_exponential(multiplier=self.backoff_s, max=30.0)

        def wait(state: RetryCallState) -> float:  # never sleep past the request's deadline
            left = remaining_s()
            return backoff(state) if left is None else max(0.0, min(backoff(state), left))

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_attempts), _OutOfTime()),
            wait=wait,
            retry=retry_if_exception_type(_TransientError),
            before_sleep=lambda state: log.warning(
                "yfinance attempt %d for %s failed: %s",
                state.attempt_number,
                symbol,
                state.outcome.exception() if state.outcome else "?",
            ),
            reraise=True,
        )
        try:
            return await retrying(self._attempt, symbol, window)
        except _TransientError as e:
            attempts = retrying.statistics.get("attempt_number", self.max_attempts)
            raise ProviderError(
                f"Yahoo Finance did not answer for {symbol!r} after {attempts} "
                f"attempt{'' if attempts == 1 else 's'}.",
                extra={"attempts": attempts},
                log_detail=f"last attempt: {e}",
            ) from (e.__cause__ or e)

    async def _attempt(self, symbol: str, window: dict[str, str]) -> pd.DataFrame:
        await self.limiter.acquire()
        left = remaining_s()
        budget = self.timeout_s if left is None else min(self.timeout_s, left)
        if budget <= 0:
            raise _TransientError("the request's deadline passed before this attempt")
        attempt = _Attempt(self._transport, time.monotonic() + budget)
        deadline = asyncio.timeout(budget)
        try:
            async with deadline:  # the worker thread cannot be killed; stop waiting for it
                raw = await asyncio.to_thread(self._history, attempt, symbol, window)
        except TimeoutError as e:
            if deadline.expired():
                pending = [x for x in attempt.exchanges if x.status is None and x.error is None]
                to = f" to {pending[-1].target}" if pending else ""
                raise _TransientError(f"no answer within {budget:g} s{to}") from e
            return self._classify(symbol, attempt, e)
        except Exception as e:
            return self._classify(symbol, attempt, e)
        if raw.empty and any(x.failed for x in attempt.exchanges if x.is_chart):
            # yfinance logged an error and returned nothing (hide_exceptions set back on)
            return self._classify(symbol, attempt, YFPricesMissingError(symbol, ""))
        return _to_bars(raw)

    def _history(self, attempt: _Attempt, symbol: str, window: dict[str, str]) -> pd.DataFrame:
        _ATTEMPT.set(attempt)  # runs in the thread's copy of the context
        YfData.cache_get.cache_clear()
        ticker = yf.Ticker(symbol, session=self._session)
        return ticker.history(
            interval="1d", auto_adjust=False, actions=False, timeout=self.timeout_s, **window
        )

    def _classify(self, symbol: str, attempt: _Attempt, e: Exception) -> pd.DataFrame:
        """Return an empty frame or raise the right error for a failed yfinance call."""
        exchanges = list(attempt.exchanges)
        chart = [x for x in exchanges if x.is_chart]
        for x in chart:
            reason = (x.yahoo_error or "").lower()
            if x.status in (400, 404) and any(m in reason for m in _EMPTY_RANGE_MARKERS):
                return empty_bars()
            if x.status == 404:
                raise SymbolNotFoundError(
                    f"Yahoo Finance knows no symbol {symbol!r} ({x.yahoo_error or 'HTTP 404'})",
                    field="symbol",
                ) from e
        bad = [x for x in chart if x.failed] or [x for x in exchanges if x.failed]
        cause = bad[-1].describe() if bad else f"{type(e).__name__}: {e}"
        if _is_transient_exception(e) or any(x.transient for x in chart):
            raise _TransientError(cause) from e
        no_bars = isinstance(e, YFPricesMissingError) and e.yahoo_reason is None
        if no_bars and chart and chart[-1].status == 200:  # valid symbol, nothing in range
            return empty_bars()
        raise ProviderError(
            f"Yahoo Finance could not supply {symbol!r}.", log_detail=f"yfinance: {cause}"
        ) from e
