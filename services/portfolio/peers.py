"""The portfolio's peers over HTTP: the backtest's signals and the market's bars.

Never imports either service. Peer problems become this service's problems through the
service kit (`shared.peers`): a strategy the backtest refuses names `strategy...`, an unknown
symbol `symbols`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from shared.errors import ValidationProblemError
from shared.http import ServiceClient, UpstreamProblemError
from shared.peers import FieldMap, ask, translate


class _Series(BaseModel):
    model_config = ConfigDict(extra="ignore")

    symbol: str
    wishes: list[int | None]


class Signals(BaseModel):
    """The part of a backtest `/signals` answer a deployment reads."""

    model_config = ConfigDict(extra="ignore")

    strategy: dict[str, Any]
    timestamps: list[datetime]
    warmup_period: int
    allow_short: bool
    series: list[_Series]


class _Bar(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timestamp: datetime
    open: float
    close: float


class _History(BaseModel):
    model_config = ConfigDict(extra="ignore")

    symbol: str
    bars: list[_Bar]


@dataclass(frozen=True)
class Prices:
    """One symbol's opens and closes by session date."""

    open: dict[date, float]
    close: dict[date, float]


# Peer field names -> this service's request fields.
_NAMES = {"symbol": "symbols", "end_date": "until"}
# A peer's 404 `no_data` (a range without bars) is a start too early for the data.
_NO_DATA = (ValidationProblemError, "start_date")


def _fields(default: str) -> FieldMap:
    """Return this service's names of the fields a peer's problem blames (default if none)."""
    return FieldMap(default=default, names=_NAMES, unknown="symbols")


class Peers:
    """Calls the backtest (signals) and the market (opening and closing prices)."""

    def __init__(self, *, backtest: ServiceClient, market: ServiceClient) -> None:
        self.backtest = backtest
        self.market = market

    async def aclose(self) -> None:
        """Close both clients."""
        await self.backtest.aclose()
        await self.market.aclose()

    async def signals(self, body: dict[str, Any]) -> Signals:
        """Return the strategy's wishes per bar for a backtest config (`POST /signals`)."""
        response = await ask(
            self.backtest,
            "POST",
            "/signals",
            about="signals",
            fields=_fields("strategy"),
            no_data=_NO_DATA,
            json=body,
        )
        return Signals.model_validate_json(response.content)

    async def backtest_run(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """Run `POST /backtest` of body; return its answer and every one of its fills."""
        try:
            response = await self.backtest.request("POST", "/backtest", json=body)
            result: dict[str, Any] = response.json()
            fills: list[Any] = []
            offset: int | None = 0
            while offset is not None:
                page = await self.backtest.request(
                    "GET",
                    f"/trades/{result['run_id']}",
                    params={"limit": 1000, "offset": offset},
                )
                answer = page.json()
                fills += answer["trades"]
                offset = answer["page"]["next_offset"]
        except UpstreamProblemError as e:
            raise translate(e, "backtest", _fields("deployment_id"), no_data=_NO_DATA) from e
        return result, fills

    async def prices(self, symbol: str, start: date, end: date) -> Prices:
        """Return the symbol's daily opens and closes start..end from the market service."""
        params = {"start": start.isoformat(), "end": end.isoformat(), "interval": "1d"}
        response = await ask(
            self.market,
            "GET",
            f"/historical/{quote(symbol, safe='')}",
            about=f"prices of {symbol}",
            fields=_fields("symbols"),
            no_data=_NO_DATA,
            params=params,
        )
        history = _History.model_validate_json(response.content)
        return Prices(
            open={b.timestamp.date(): b.open for b in history.bars},
            close={b.timestamp.date(): b.close for b in history.bars},
        )
