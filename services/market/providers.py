"""Market-data providers: where bars come from when neither cache nor database has them.

A provider returns raw daily bars as a DataFrame indexed by UTC-midnight timestamps with the
columns of :data:`BAR_COLUMNS`. Providers never validate, cache or store: the service does.

The chain asks providers in order, each behind a circuit breaker (after
``failure_threshold`` consecutive failures a provider is skipped for ``cooldown_s``, then one
trial call decides), and within the request's deadline (:func:`deadline`): a remote provider
is given only the time the request has left. What was skipped travels with the answer
(:attr:`Fetched.label`, e.g. ``csv,yfinance skipped (circuit open)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import pandas as pd

from services.market.bars import BAR_COLUMNS, empty_bars
from shared.breaker import BreakerState, CircuitBreaker, log_transitions
from shared.errors import AppError, SymbolNotFoundError, UpstreamUnavailableError
from shared.metrics import observe_provider_call, publish_breaker, set_breaker_state

log = logging.getLogger(__name__)

__all__ = [  # BAR_COLUMNS and empty_bars stay importable from here for the providers
    "BAR_COLUMNS",
    "CsvProvider",
    "Fetched",
    "Provider",
    "ProviderChain",
    "ProviderError",
    "SymbolNotFoundError",
    "csv_candidates",
    "deadline",
    "empty_bars",
    "remaining_s",
]

# Monotonic time by which the current request's provider calls must be done (None: no bound).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "provider_deadline", default=None
)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Bound the provider calls made inside to seconds from now (an outer, earlier one wins)."""
    if seconds is None:
        yield
        return
    outer = _DEADLINE.get()
    mine = time.monotonic() + seconds
    token = _DEADLINE.set(mine if outer is None else min(outer, mine))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining_s() -> float | None:
    """Return the seconds left of the current request's deadline (None: unbounded)."""
    end = _DEADLINE.get()
    return None if end is None else end - time.monotonic()


class ProviderError(UpstreamUnavailableError):
    """The provider could not be reached or answered nonsense."""

    code = "provider_unavailable"


class Provider(Protocol):
    """A source of daily OHLCV bars; `remote` ones are bounded by the request's deadline."""

    name: str
    remote: bool

    async def fetch_history(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Return bars with `start <= day <= end` (may be empty); raise SymbolNotFoundError."""
        ...

    async def fetch_latest(self, symbol: str) -> pd.DataFrame:
        """Return the most recent bars (at least two when the instrument has them)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def csv_candidates(symbol: str) -> list[str]:
    """Return the file stems a symbol may be stored under (`^GSPC` -> GSPC, `BRK.B` -> BRK-B)."""
    stems = [symbol]
    if symbol.startswith("^"):
        stems.append(symbol[1:])
    for a, b in ((".", "-"), ("-", ".")):
        if a in symbol:
            stems.append(symbol.replace(a, b))
    return stems


class CsvProvider:
    """Read `SYMBOL.csv` files (`date,open,high,low,close,adj_close,volume`) from a folder."""

    name = "csv"
    remote = False  # a local folder: always asked, even when the deadline has passed

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._frames: dict[Path, tuple[float, pd.DataFrame]] = {}
        self._lock = asyncio.Lock()

    def _index(self) -> dict[str, Path]:
        if not self.directory.is_dir():
            return {}
        return {p.stem.upper(): p for p in self.directory.glob("*.csv")}

    def _path_for(self, symbol: str) -> Path:
        index = self._index()
        for stem in csv_candidates(symbol):
            if stem in index:
                return index[stem]
        raise SymbolNotFoundError(
            f"Unknown symbol {symbol!r}",
            field="symbol",
            log_detail=f"no CSV file for it in {self.directory}",
        )

    def _read(self, path: Path) -> pd.DataFrame:
        mtime = path.stat().st_mtime
        hit = self._frames.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            raw = pd.read_csv(path, dtype={"date": str})
        except (OSError, ValueError) as e:
            raise ProviderError(
                "The CSV data source could not be read.", log_detail=f"{path}: {e}"
            ) from e
        missing = {"date", *BAR_COLUMNS} - set(raw.columns)
        if missing:
            raise ProviderError(
                "The CSV data source could not be read.",
                log_detail=f"{path} lacks columns {sorted(missing)}",
            )
        frame = raw.assign(timestamp=pd.to_datetime(raw["date"], utc=True)).set_index("timestamp")
        frame = frame.loc[:, list(BAR_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        frame = frame.astype("float64").sort_index()
        self._frames[path] = (mtime, frame)
        return frame

    async def _frame(self, symbol: str) -> pd.DataFrame:
        path = self._path_for(symbol)
        async with self._lock:
            return await asyncio.to_thread(self._read, path)

    async def fetch_history(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Return the file's rows between start and end, inclusive."""
        frame = await self._frame(symbol)
        lo = pd.Timestamp(start, tz="UTC")
        hi = pd.Timestamp(end, tz="UTC")
        return frame.loc[(frame.index >= lo) & (frame.index <= hi)].copy()

    async def fetch_latest(self, symbol: str) -> pd.DataFrame:
        """Return the file's last five rows."""
        return (await self._frame(symbol)).iloc[-5:].copy()

    async def span(self, symbol: str) -> tuple[date, date] | None:
        """Return the dates of the file's first and last rows (None: an empty file)."""
        frame = await self._frame(symbol)
        if frame.empty:
            return None
        return frame.index[0].date(), frame.index[-1].date()

    async def listing(self) -> list[tuple[str, date, date]]:
        """Return (symbol, first date, last date) of every file with rows, by file name."""
        out = []
        for stem, path in sorted(self._index().items()):
            async with self._lock:
                frame = await asyncio.to_thread(self._read, path)
            if not frame.empty:
                out.append((stem, frame.index[0].date(), frame.index[-1].date()))
        return out

    async def aclose(self) -> None:
        """Drop the parsed-file memo."""
        self._frames.clear()


@dataclass(frozen=True)
class Fetched:
    """Bars from the provider that answered, and the providers skipped before it."""

    source: str
    frame: pd.DataFrame
    skipped: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Return the answer's `source`: the provider, then what was skipped and why."""
        return ",".join((self.source, *self.skipped))


def _log_and_publish(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
    """Log a provider breaker's transitions and publish its state to /metrics."""
    log_transitions(breaker, old, new)
    publish_breaker(breaker, old, new)


class ProviderChain:
    """Ask providers in order, each behind a circuit breaker; the first that knows the symbol
    answers."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self.providers = list(providers)
        self.breakers = {
            p.name: CircuitBreaker(
                f"provider {p.name}",
                failure_threshold=failure_threshold,
                cooldown_s=cooldown_s,
                clock=clock,
                on_change=_log_and_publish,
            )
            for p in self.providers
        }
        for breaker in self.breakers.values():
            set_breaker_state(breaker.name, "closed")

    def breaker_states(self) -> list[dict[str, object]]:
        """Return each provider's breaker as plain data (for health and metrics)."""
        return [self.breakers[p.name].snapshot() for p in self.providers]

    async def _first(self, symbol: str, call: str, *args: object) -> Fetched:
        errors: list[AppError] = []
        skipped: list[str] = []
        for provider in self.providers:
            remote = getattr(provider, "remote", True)
            left = remaining_s() if remote else None
            if left is not None and left <= 0:
                skipped.append(f"{provider.name} skipped (request deadline)")
                errors.append(ProviderError("", log_detail=f"{provider.name}: no time left"))
                continue
            breaker = self.breakers[provider.name]
            permit = breaker.allow()
            if permit is None:
                skipped.append(f"{provider.name} skipped (circuit open)")
                errors.append(
                    ProviderError(
                        "",
                        log_detail=f"{provider.name}: circuit open after repeated failures, "
                        f"{breaker.retry_after_s():.0f} s of cool-down left",
                    )
                )
                continue
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(left):
                    frame = await getattr(provider, call)(symbol, *args)
            except SymbolNotFoundError as e:
                breaker.success(permit)  # it answered: it does not know the symbol
                observe_provider_call(provider.name, ok=True, seconds=time.perf_counter() - t0)
                errors.append(e)
                continue
            except (ProviderError, TimeoutError) as e:
                breaker.failure(permit)
                observe_provider_call(provider.name, ok=False, seconds=time.perf_counter() - t0)
                detail = (
                    e.log_detail or e.detail
                    if isinstance(e, ProviderError)
                    else "no answer within the request deadline"
                )
                log.warning("provider %s failed for %s: %s", provider.name, symbol, detail)
                errors.append(ProviderError("", log_detail=f"{provider.name}: {detail}"))
                continue
            except BaseException:
                breaker.release(permit)
                raise
            breaker.success(permit)
            observe_provider_call(provider.name, ok=True, seconds=time.perf_counter() - t0)
            return Fetched(provider.name, frame, tuple(skipped))
        unavailable = [e for e in errors if isinstance(e, ProviderError)]
        if unavailable:
            names = ", ".join(p.name for p in self.providers)
            raise ProviderError(
                f"No data source could supply {symbol!r} right now (tried {names}); retry shortly.",
                log_detail="; ".join(e.log_detail or e.detail for e in errors),
            )
        raise SymbolNotFoundError(f"Unknown symbol {symbol!r}", field="symbol")

    async def fetch_history(self, symbol: str, start: date, end: date) -> Fetched:
        """Return bars start..end from the first provider that knows the symbol."""
        return await self._first(symbol, "fetch_history", start, end)

    async def fetch_latest(self, symbol: str) -> Fetched:
        """Return the latest bars from the first provider that knows the symbol."""
        return await self._first(symbol, "fetch_latest")

    async def span(self, symbol: str) -> tuple[date, date] | None:
        """Return the first and last bar dates from the first provider that knows them
        cheaply (a local file; a remote vendor is not asked), or None."""
        for provider in self.providers:
            span = getattr(provider, "span", None)
            if span is None:
                continue
            try:
                got: tuple[date, date] | None = await span(symbol)
            except AppError:
                continue
            if got is not None:
                return got
        return None

    async def listing(self) -> list[tuple[str, date, date]]:
        """Return (symbol, first date, last date) of every local file the providers hold."""
        out: list[tuple[str, date, date]] = []
        for provider in self.providers:
            listing = getattr(provider, "listing", None)
            if listing is not None:
                out.extend(await listing())
        return out

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers:
            await provider.aclose()
