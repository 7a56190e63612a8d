"""The portfolio's peers over HTTP: the backtest's signals and the market's bars.

Never imports either service. Peer problems become this service's problems: a strategy the
backtest refuses names `strategy...`, an unknown symbol `symbols`. (The translation mirrors
`services/backtest/market.py`; the service kit will hold one copy.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from shared.errors import (
    AppError,
    NotFoundError,
    ServiceUnavailableError,
    UpstreamUnavailableError,
    ValidationProblemError,
)
from shared.http import ServiceClient, UpstreamProblemError


class SymbolNotFoundError(NotFoundError):
    """The market service knows no such symbol."""

    code = "symbol_not_found"


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


def _field(field: str | None, default: str) -> str:
    if not field:
        return default
    renames = {"symbol": "symbols", "end_date": "until"}
    return renames.get(field, field)


def translate(e: UpstreamProblemError, what: str, default_field: str) -> AppError:
    """Return the problem a peer's error means for a portfolio request."""
    detail = f"{e.service} service: {e.detail}"
    if e.status == 404 and e.code in ("no_data",):
        return ValidationProblemError(f"{what}: {detail}", field="start_date")
    if e.status == 404:
        return SymbolNotFoundError(f"{what}: {detail}", field=_field(e.problem.field, "symbols"))
    if e.status in (400, 422):
        return ValidationProblemError(
            f"{what}: {detail}", field=_field(e.problem.field, default_field)
        )
    if e.status in (503, 504):
        return ServiceUnavailableError(f"{what}: {detail}")
    return UpstreamUnavailableError(f"{what}: {e.service} answered {e.status} {e.code}: {detail}")


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
        try:
            response = await self.backtest.request("POST", "/signals", json=body)
        except UpstreamProblemError as e:
            raise translate(e, "signals", "strategy") from e
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
            raise translate(e, "backtest", "deployment_id") from e
        return result, fills

    async def prices(self, symbol: str, start: date, end: date) -> Prices:
        """Return the symbol's daily opens and closes start..end from the market service."""
        params = {"start": start.isoformat(), "end": end.isoformat(), "interval": "1d"}
        try:
            response = await self.market.request(
                "GET", f"/historical/{quote(symbol, safe='')}", params=params
            )
        except UpstreamProblemError as e:
            raise translate(e, f"prices of {symbol}", "symbols") from e
        history = _History.model_validate_json(response.content)
        return Prices(
            open={b.timestamp.date(): b.open for b in history.bars},
            close={b.timestamp.date(): b.close for b in history.bars},
        )
