"""Features and bars from the market service, over its HTTP contract.

The predictor never imports market code: `shared.peers.peer_client(settings, "market")` calls
MARKET_URL when set, else the co-hosted market app in-process, else the `trading serve`
layout. `GET /features/{symbol}` gives the 50 model features and the closes of a window;
`GET /price/{symbol}` the latest bar. Market problems become problems that name this
service's fields (`symbol`, `symbols[1]`, `start_date`, `as_of`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd

from services.predictor.ml.types import FloatArray, IntArray
from shared.errors import SymbolNotFoundError, UpstreamUnavailableError
from shared.http import ServiceClient
from shared.peers import FieldMap, ask


@dataclass(frozen=True)
class FeatureFrame:
    """One symbol's features over a window: names, bar times (ns, UTC), matrix, closes."""

    symbol: str
    names: list[str]
    times: IntArray
    matrix: FloatArray
    close: FloatArray

    @property
    def bars(self) -> int:
        """Return the number of bars."""
        return int(self.times.size)

    def dates(self) -> pd.DatetimeIndex:
        """Return the bar times as a naive UTC DatetimeIndex."""
        return pd.DatetimeIndex(self.times.view("datetime64[ns]"))

    def select(self, names: list[str]) -> FloatArray:
        """Return the matrix columns of names, in that order (KeyError if one is missing)."""
        index = {name: j for j, name in enumerate(self.names)}
        return np.ascontiguousarray(self.matrix[:, [index[n] for n in names]])


# The market's first accepted date: a warm-up reaching back before it asks from there (an
# `as_of` early in 1900 is too few bars, a 409, not the market's 422 on a date we made up).
FIRST_DAY = date(1900, 1, 1)


def _parse_features(symbol: str, body: bytes) -> FeatureFrame:
    """Parse a `/features` answer into arrays (None -> NaN); raise ValueError if malformed."""
    data = json.loads(body)
    values: dict[str, list[Any]] = data["values"]
    names = list(values)
    stamps = pd.DatetimeIndex(pd.to_datetime(data["timestamps"], utc=True)).tz_localize(None)
    n = len(stamps)
    close = np.asarray(data["close"], dtype=np.float64)
    matrix = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = np.asarray(values[name], dtype=np.float64)  # JSON null becomes NaN
        if column.shape != (n,):
            raise ValueError(f"feature {name} has {column.size} values for {n} bars")
        matrix[:, j] = column
    if close.shape != (n,):
        raise ValueError(f"{close.size} closes for {n} bars")
    times = np.asarray(stamps.as_unit("ns").asi8, dtype=np.int64)
    return FeatureFrame(data.get("symbol", symbol), names, times, matrix, close)


def _parse_closes(body: bytes) -> tuple[IntArray, FloatArray]:
    """Parse a `/historical` answer into (bar times in ns, closes)."""
    bars = json.loads(body)["bars"]
    stamps = pd.DatetimeIndex(pd.to_datetime([b["timestamp"] for b in bars], utc=True))
    times = np.asarray(stamps.tz_localize(None).as_unit("ns").asi8, dtype=np.int64)
    return times, np.asarray([b["close"] for b in bars], dtype=np.float64)


def _fields(symbol_field: str, date_field: str) -> FieldMap:
    """Return this service's names of the fields a market problem blames: the symbol's, else
    the date's."""
    return FieldMap(default=symbol_field, names={"symbol": symbol_field}, others=date_field)


class MarketFeatures:
    """Load features and latest bar dates from the market service."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def _ask(
        self, path: str, symbol: str, fields: FieldMap, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """GET path from the market; its problems name fields (no data: an unknown symbol)."""
        no_data = (SymbolNotFoundError, fields.default)
        return await ask(
            self.client, "GET", path, about=symbol, fields=fields, no_data=no_data, params=params
        )

    async def features(
        self,
        symbol: str,
        start: date | None,
        end: date | None,
        *,
        symbol_field: str = "symbol",
        date_field: str = "start_date",
    ) -> FeatureFrame:
        """Return the features and closes of every bar start..end (market defaults if None)."""
        start = None if start is None else max(start, FIRST_DAY)
        params = {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None}
        response = await self._ask(
            f"/features/{quote(symbol, safe='')}", symbol, _fields(symbol_field, date_field), params
        )
        try:
            if len(response.content) > 64 * 1024:
                return await asyncio.to_thread(_parse_features, symbol, response.content)
            return _parse_features(symbol, response.content)
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamUnavailableError(
                f"The market service answered /features/{symbol} with something that is not "
                f"a feature table ({type(e).__name__}: {e})."
            ) from e

    async def closes(self, symbol: str, start: date, end: date) -> tuple[IntArray, FloatArray]:
        """Return (bar times in ns, closes) of the daily bars start..end (unadjusted)."""
        params = {"start": max(start, FIRST_DAY).isoformat(), "end": end.isoformat()}
        response = await self._ask(
            f"/historical/{quote(symbol, safe='')}", symbol, _fields("symbol", "symbol"), params
        )
        try:
            return await asyncio.to_thread(_parse_closes, response.content)
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamUnavailableError(
                f"The market service answered /historical/{symbol} without bars."
            ) from e

    async def last_bar(self, symbol: str, *, symbol_field: str = "symbol") -> date:
        """Return the date of the symbol's latest bar."""
        response = await self._ask(
            f"/price/{quote(symbol, safe='')}", symbol, _fields(symbol_field, symbol_field)
        )
        try:
            stamp = json.loads(response.content)["timestamp"]
            return pd.Timestamp(stamp).date()
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamUnavailableError(
                f"The market service answered /price/{symbol} without a bar date."
            ) from e
