"""Market-data providers: where bars come from when neither cache nor database has them.

A provider returns raw daily bars as a DataFrame indexed by UTC-midnight timestamps with the
columns of :data:`BAR_COLUMNS`. Providers never validate, cache or store: the service does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Protocol

import pandas as pd

from services.market.bars import BAR_COLUMNS, empty_bars
from shared.errors import AppError, NotFoundError, UpstreamUnavailableError

log = logging.getLogger(__name__)

__all__ = [  # BAR_COLUMNS and empty_bars stay importable from here for the providers
    "BAR_COLUMNS",
    "CsvProvider",
    "Provider",
    "ProviderChain",
    "ProviderError",
    "SymbolNotFoundError",
    "csv_candidates",
    "empty_bars",
]


class SymbolNotFoundError(NotFoundError):
    """The provider knows no instrument by this symbol."""

    code = "symbol_not_found"


class ProviderError(UpstreamUnavailableError):
    """The provider could not be reached or answered nonsense."""

    code = "provider_unavailable"


class Provider(Protocol):
    """A source of daily OHLCV bars."""

    name: str

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

    async def aclose(self) -> None:
        """Drop the parsed-file memo."""
        self._frames.clear()


class ProviderChain:
    """Ask providers in order; the first that knows the symbol answers."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self.providers = list(providers)

    async def _first(self, symbol: str, call: str, *args: object) -> tuple[str, pd.DataFrame]:
        errors: list[AppError] = []
        for provider in self.providers:
            try:
                frame = await getattr(provider, call)(symbol, *args)
            except SymbolNotFoundError as e:
                errors.append(e)
                continue
            except ProviderError as e:
                log.warning(
                    "provider %s failed for %s: %s", provider.name, symbol, e.log_detail or e.detail
                )
                errors.append(e)
                continue
            return provider.name, frame
        unavailable = [e for e in errors if isinstance(e, ProviderError)]
        if unavailable:
            names = ", ".join(p.name for p in self.providers)
            raise ProviderError(
                f"No data source could supply {symbol!r} right now (tried {names}); retry shortly.",
                log_detail="; ".join(e.log_detail or e.detail for e in errors),
            )
        raise SymbolNotFoundError(f"Unknown symbol {symbol!r}", field="symbol")

    async def fetch_history(self, symbol: str, start: date, end: date) -> tuple[str, pd.DataFrame]:
        """Return (provider name, bars) from the first provider that knows the symbol."""
        return await self._first(symbol, "fetch_history", start, end)

    async def fetch_latest(self, symbol: str) -> tuple[str, pd.DataFrame]:
        """Return (provider name, latest bars) from the first provider that knows the symbol."""
        return await self._first(symbol, "fetch_latest")

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers:
            await provider.aclose()
