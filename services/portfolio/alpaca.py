"""The Alpaca broker: alpaca-py's `TradingClient`, paper by default, keys from the key store.

Endpoints used (alpaca-py 0.44 `TradingClient`, base `https://paper-api.alpaca.markets/v2`):
`GET /account`, `POST /orders` (market, `time_in_force` day, our `client_order_id`),
`GET /orders:by_client_order_id`, `GET /orders?status=open`, `GET /positions`,
`GET /clock`. The SDK is synchronous (requests): every call runs in a thread.

Keys come from the encrypted key store (`trading keys set ALPACA_API_KEY`, `trading keys set
ALPACA_SECRET_KEY`). `ALPACA_PAPER=0` asks for the live API, which is refused unless
`ALPACA_LIVE=1` says so explicitly too. Alpaca answers a second order with a client_order_id
it has seen with 422 `client_order_id must be unique`: the adapter then returns the order it
already holds, so submitting is idempotent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Clock, Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest

from services.portfolio.brokers import (
    BrokerAccount,
    BrokerClock,
    BrokerNotConfiguredError,
    BrokerPosition,
    Execution,
    Ticket,
)
from services.portfolio.execution import CostModel
from services.portfolio.settings import PortfolioSettings
from shared.errors import AppError, ServiceUnavailableError, UpstreamUnavailableError
from shared.keys import KeyStore, KeyStoreError

T = TypeVar("T")
KEY_NAMES = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")
DUPLICATE = "client_order_id must be unique"
# Alpaca's terminal states other than filled: the order will never fill (more).
ENDED = {
    OrderStatus.CANCELED,
    OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
    OrderStatus.STOPPED,
    OrderStatus.SUSPENDED,
    OrderStatus.DONE_FOR_DAY,
    OrderStatus.REPLACED,
}


def alpaca_client(settings: PortfolioSettings) -> TradingClient:
    """Return a TradingClient with the stored keys: paper unless ALPACA_PAPER=0 and
    ALPACA_LIVE=1; a problem saying what to do when keys or the live switch are missing."""
    if not settings.alpaca_paper and not settings.alpaca_live:
        raise BrokerNotConfiguredError(
            "Live trading refused: ALPACA_PAPER=0 asks for Alpaca's live API, which needs an "
            "explicit ALPACA_LIVE=1 as well. Unset ALPACA_PAPER to trade the paper account.",
            field="broker",
        )
    store = KeyStore(settings.data_dir, settings.trading_master_key)
    keys: list[str] = []
    for name in KEY_NAMES:
        try:
            keys.append(store.get(name).get_secret_value())
        except KeyStoreError as e:
            raise BrokerNotConfiguredError(
                f"Alpaca keys missing ({e}): store them with `trading keys set ALPACA_API_KEY` "
                "and `trading keys set ALPACA_SECRET_KEY` (the paper account's keys).",
                field="broker",
            ) from e
    return TradingClient(
        keys[0], keys[1], paper=settings.alpaca_paper, url_override=settings.alpaca_url
    )


def _said(e: APIError) -> tuple[int | None, str]:
    """Return (HTTP status, Alpaca's message) of an API error."""
    try:
        message = str(json.loads(str(e)).get("message", e))
    except (ValueError, AttributeError):
        message = str(e)
    return e.status_code, message


def _number(x: Any) -> float:
    return float(x) if x is not None else 0.0


class AlpacaBroker:
    """Orders, positions, account and clock of an Alpaca account."""

    name = "alpaca"

    def __init__(self, client: TradingClient) -> None:
        self.client = client

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except APIError as e:
            status, message = _said(e)
            raise UpstreamUnavailableError(f"alpaca {what}: {status} {message}") from e
        except requests.RequestException as e:
            raise ServiceUnavailableError(f"alpaca {what}: unreachable ({e})") from e

    @staticmethod
    def _execution(order: Order | Any) -> Execution:
        if not isinstance(order, Order):
            raise AppError(f"alpaca answered an unexpected order shape: {order!r}")
        filled = _number(order.filled_qty)
        price = _number(order.filled_avg_price) if order.filled_avg_price is not None else None
        if order.status == OrderStatus.FILLED or (order.status in ENDED and filled > 0):
            reason = None if order.status == OrderStatus.FILLED else f"partial, {order.status}"
            return Execution(order.client_order_id, "filled", filled, price, 0.0, reason)
        if order.status in ENDED:
            return Execution(order.client_order_id, "rejected", reason=f"alpaca: {order.status}")
        return Execution(order.client_order_id, "submitted")

    async def submit(
        self, ticket: Ticket, *, quote: float, costs: CostModel, cash: float
    ) -> Execution:
        """Send a market day order under the ticket's client_order_id (a duplicate returns the
        order Alpaca already has); a refusal (403 buying power, 422) is a rejection."""
        request = MarketOrderRequest(
            symbol=ticket.symbol,
            qty=ticket.quantity,
            side=OrderSide.BUY if ticket.side == "buy" else OrderSide.SELL,
            time_in_force=TimeInForce.DAY,
            client_order_id=ticket.client_order_id,
        )
        try:
            order = await asyncio.to_thread(self.client.submit_order, request)
        except APIError as e:
            status, message = _said(e)
            if status == 422 and DUPLICATE in message:
                existing = await self.order(ticket.client_order_id)
                if existing is not None:
                    return existing
            if status in (403, 422):
                return Execution(ticket.client_order_id, "rejected", reason=f"alpaca: {message}")
            raise UpstreamUnavailableError(f"alpaca order: {status} {message}") from e
        except requests.RequestException as e:
            raise ServiceUnavailableError(f"alpaca order: unreachable ({e})") from e
        return self._execution(order)

    async def order(self, client_order_id: str) -> Execution | None:
        """Return what became of the order with that client_order_id (None: Alpaca has none)."""
        try:
            order = await asyncio.to_thread(self.client.get_order_by_client_id, client_order_id)
        except APIError as e:
            if e.status_code == 404:
                return None
            status, message = _said(e)
            raise UpstreamUnavailableError(f"alpaca order lookup: {status} {message}") from e
        except requests.RequestException as e:
            raise ServiceUnavailableError(f"alpaca order lookup: unreachable ({e})") from e
        return self._execution(order)

    async def open_orders(self) -> list[str]:
        """Return the client_order_ids of the account's open orders."""
        got = await self._call(
            "open orders",
            self.client.get_orders,
            GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500),
        )
        return [o.client_order_id for o in got if isinstance(o, Order)]

    async def positions(self) -> dict[str, BrokerPosition]:
        """Return the account's positions by symbol."""
        got = await self._call("positions", self.client.get_all_positions)
        out: dict[str, BrokerPosition] = {}
        for p in got:
            if isinstance(p, Position):
                qty = float(p.qty)
                last = _number(p.current_price) if p.current_price else float(p.avg_entry_price)
                out[p.symbol] = BrokerPosition(p.symbol, qty, float(p.avg_entry_price), last)
        return out

    async def account(self) -> BrokerAccount:
        """Return the account's cash and equity."""
        a = await self._call("account", self.client.get_account)
        if not isinstance(a, TradeAccount):
            raise AppError(f"alpaca answered an unexpected account shape: {a!r}")
        blocked = bool(a.trading_blocked or a.account_blocked)
        return BrokerAccount(cash=_number(a.cash), equity=_number(a.equity), blocked=blocked)

    async def clock(self) -> BrokerClock:
        """Return the exchange clock (now, open or not, the next open and close)."""
        c = await self._call("clock", self.client.get_clock)
        if not isinstance(c, Clock):
            raise AppError(f"alpaca answered an unexpected clock shape: {c!r}")
        return BrokerClock(c.timestamp, c.is_open, c.next_open, c.next_close)
