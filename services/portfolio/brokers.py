"""The broker interface every account trades through, and the embedded paper broker.

A broker takes a `Ticket` (a stored order: deterministic client_order_id, symbol, side,
quantity) and answers an `Execution`: `filled` (price, quantity, commission), `submitted`
(accepted, not filled yet: a live broker fills at the next open and says so later) or
`rejected` (with the broker's reason). `submit` is idempotent by client_order_id: sending
the same ticket twice never makes a second order. Brokers that keep their own book (Alpaca)
also answer `order`, `positions`, `account` and `clock`, which the service reconciles with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from services.portfolio.execution import CostModel
from shared.errors import AppError

Status = Literal["filled", "submitted", "rejected"]


class BrokerNotConfiguredError(AppError):
    """The account's broker cannot be used as the server is configured (keys, live switch)."""

    status = 409
    code = "broker_not_configured"
    title = "Broker not configured"


class ReplayNotSupportedError(AppError):
    """A live broker cannot trade sessions in the past."""

    status = 409
    code = "replay_not_supported"
    title = "A live broker trades only the latest session"


@dataclass(frozen=True)
class Ticket:
    """One stored order as sent to a broker."""

    client_order_id: str
    symbol: str
    side: str  # buy | sell
    quantity: float


@dataclass(frozen=True)
class Execution:
    """What a broker made of one order."""

    client_order_id: str
    status: Status
    quantity: float = 0.0
    price: float | None = None
    commission: float = 0.0
    reason: str | None = None


@dataclass(frozen=True)
class BrokerPosition:
    """A position as the broker holds it."""

    symbol: str
    quantity: float  # signed: negative is short
    average_price: float
    last_price: float


@dataclass(frozen=True)
class BrokerAccount:
    """A broker account's cash and equity."""

    cash: float
    equity: float
    blocked: bool


@dataclass(frozen=True)
class BrokerClock:
    """The broker's exchange clock."""

    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


class Broker(Protocol):
    """What the service needs from a broker."""

    name: str

    async def submit(
        self, ticket: Ticket, *, quote: float, costs: CostModel, cash: float
    ) -> Execution:
        """Send one market order (idempotent by client_order_id); quote, costs and cash are
        the service's model of the fill, used by a simulated broker only."""
        ...


class PaperBroker:
    """The embedded broker: a market order fills whole at the session's open (`quote`), with
    the deployment's slippage and commission, or is rejected when cash is short. It keeps no
    book of its own (the service's tables are its book), so it never reconciles."""

    name = "paper"

    async def submit(
        self, ticket: Ticket, *, quote: float, costs: CostModel, cash: float
    ) -> Execution:
        """Fill the ticket at quote with slippage and commission, or reject it."""
        sign = 1.0 if ticket.side == "buy" else -1.0
        fill = costs.fill_price(quote, sign)
        fee = costs.fee(ticket.quantity, fill)
        need = ticket.quantity * fill + fee
        if sign > 0 and need > cash * (1 + 1e-12) + 1e-9:
            reason = f"insufficient cash: {need:.2f} needed, {cash:.2f} held"
            return Execution(ticket.client_order_id, "rejected", reason=reason)
        return Execution(ticket.client_order_id, "filled", ticket.quantity, fill, fee)
