"""Turn a session's wishes into orders as the backtest's engine would, then pass them by risk.

The engine's order of events, for one session of a live book: every close before any
opening; an opening order is sized on the cash the closes released, on the free margin
`min(equity - gross, cash)`, refused beyond `max_positions`. Sizing and commission are the
engine's own kernels (`shared.quant.sizing`); slippage is adverse. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from shared.quant.sizing import SIZE_METHODS, fee_nb, round_shares_nb, size_order_nb


@dataclass(frozen=True)
class CostModel:
    """The backtest's cost fields."""

    commission: float = 0.0
    commission_rate: float = 0.0
    min_commission: float = 0.0
    slippage: float = 0.001

    def fee(self, shares: float, fill: float) -> float:
        """Return the commission of a fill (0 for no shares)."""
        return float(
            fee_nb(shares, fill, self.commission, self.commission_rate, self.min_commission)
        )

    def fill_price(self, quote: float, side: float) -> float:
        """Return the fill price of a buy (+1) or sell (-1) at quote, slippage included."""
        return quote * (1.0 + side * self.slippage)


@dataclass(frozen=True)
class Sizing:
    """The backtest's position sizing (volatility targeting is not supported here)."""

    method: str = "all_in"
    value: float = 1.0
    fractional: bool = False
    max_positions: int = 1


@dataclass(frozen=True)
class Limits:
    """Risk limits (None: off)."""

    max_position_pct: float | None = None
    max_gross_exposure: float | None = None
    max_orders_per_day: int | None = None
    daily_loss_limit: float | None = None
    max_drawdown: float | None = None


@dataclass
class Holding:
    """One position of the book."""

    quantity: float
    average_price: float
    entry_commission: float


@dataclass
class Planned:
    """One order the session decided: `status` new (to send) or refused (with reason)."""

    symbol: str
    side: str  # buy | sell
    quantity: float
    requested: float
    status: str = "new"
    reason: str | None = None
    closing: bool = False


@dataclass
class Gate:
    """Why the risk manager refuses orders this session (None: it lets them through)."""

    halted: str | None = None  # kill switch or drawdown: no order passes
    no_entries: str | None = None  # daily loss: exits pass, entries do not
    orders_so_far: int = 0


def _round(x: float, fractional: bool) -> float:
    return float(round_shares_nb(x, fractional))


def order_shares(
    sizing: Sizing, costs: CostModel, fill: float, free: float, equity: float, slots: int
) -> tuple[float, float]:
    """Return (shares, wanted) for an opening order at fill with free margin (engine rule)."""
    shares, want = size_order_nb(
        SIZE_METHODS[sizing.method],
        sizing.value,
        sizing.fractional,
        costs.commission,
        costs.commission_rate,
        costs.min_commission,
        252.0,  # read by volatility targeting only, which a deployment does not offer
        fill,
        free,
        equity,
        math.nan,
        slots,
    )
    return float(shares), float(want)


def warm_kernels() -> None:
    """Compile (or load) the sizing kernels once, before the first session is planned."""
    order_shares(Sizing(), CostModel(), 100.0, 1_000.0, 1_000.0, 1)
    _round(1.5, False)


@dataclass
class Book:
    """Cash and positions, as the planner moves them while it decides one session."""

    cash: float
    holdings: dict[str, Holding] = field(default_factory=dict)

    def values(self, quotes: dict[str, float]) -> tuple[float, float]:
        """Return (net, gross) position value at quotes."""
        net = gross = 0.0
        for s, h in self.holdings.items():
            v = h.quantity * quotes[s]
            net += v
            gross += abs(v)
        return net, gross


def plan_session(
    book: Book,
    pending: dict[str, int],
    quotes: dict[str, float],
    *,
    symbols: list[str],
    sizing: Sizing,
    costs: CostModel,
    limits: Limits,
    gate: Gate,
) -> list[Planned]:
    """Return the orders of one session's open: closes first, then openings, each past risk.

    `book` is moved as if every order sent filled at the quote with slippage (the paper
    broker's fill), so an opening is sized on the cash the closes released.
    """
    out: list[Planned] = []
    count = gate.orders_so_far

    def admit(order: Planned, *, entry: bool) -> bool:
        nonlocal count
        reason = gate.halted or (gate.no_entries if entry else None)
        cap = limits.max_orders_per_day
        if reason is None and cap is not None and count >= cap:
            reason = f"max_orders_per_day: {cap} orders this session"
        if reason is not None:
            order.status, order.reason = "refused", reason
            out.append(order)
            return False
        count += 1
        out.append(order)
        return True

    for s in symbols:  # every close first
        d = pending.get(s)
        h = book.holdings.get(s)
        if d is None or h is None or h.quantity == 0.0:
            continue
        if (h.quantity > 0 and d <= 0) or (h.quantity < 0 and d >= 0):
            side = -1.0 if h.quantity > 0 else 1.0
            qty = abs(h.quantity)
            order = Planned(s, "sell" if side < 0 else "buy", qty, qty, closing=True)
            if admit(order, entry=False):
                fill = costs.fill_price(quotes[s], side)
                fee = costs.fee(qty, fill)
                book.cash += qty * fill - fee if side < 0 else -(qty * fill + fee)
                del book.holdings[s]
    held = sum(1 for h in book.holdings.values() if h.quantity != 0.0)
    for s in symbols:  # then the openings
        d = pending.get(s)
        if d is None or d == 0 or s in book.holdings:
            continue
        side = 1.0 if d > 0 else -1.0
        name = "buy" if side > 0 else "sell"
        if held >= sizing.max_positions:
            continue  # the engine rejects it silently (counted, never sent)
        slots = min(sizing.max_positions, len(symbols)) - held
        fill = costs.fill_price(quotes[s], side)
        net, gross = book.values(quotes)
        equity = book.cash + net
        free = max(min(equity - gross, book.cash), 0.0)
        shares, _ = order_shares(sizing, costs, fill, free, equity, slots)
        if not shares > 0.0:
            continue
        requested = shares
        cut: str | None = None
        if limits.max_position_pct is not None:
            cap = _round(limits.max_position_pct * equity / fill, sizing.fractional)
            if shares > cap:
                shares, cut = cap, f"max_position_pct: cut to {cap:g} shares"
        if limits.max_gross_exposure is not None:
            room = limits.max_gross_exposure * equity - gross
            cap = _round(room / fill, sizing.fractional)
            if shares > cap:
                shares, cut = cap, f"max_gross_exposure: cut to {cap:g} shares"
        if not shares > 0.0:
            out.append(Planned(s, name, 0.0, requested, "refused", cut))
            continue
        order = Planned(s, name, shares, requested, reason=cut)
        if admit(order, entry=True):
            fee = costs.fee(shares, fill)
            book.cash += -(shares * fill + fee) if side > 0 else shares * fill - fee
            book.holdings[s] = Holding(side * shares, fill, fee)
            held += 1
    return out


def decide(wishes: dict[str, int | None], book: Book) -> dict[str, int]:
    """Return the pending wishes after a session's close (engine rule: a wish equal to the
    current side is nothing; null is no change)."""
    nxt: dict[str, int] = {}
    for s, w in wishes.items():
        if w is None:
            continue
        h = book.holdings.get(s)
        side = 0 if h is None or h.quantity == 0 else (1 if h.quantity > 0 else -1)
        if w != side:
            nxt[s] = w
    return nxt


@dataclass(frozen=True)
class Config:
    """A deployment's stored configuration, parsed for the planner."""

    symbols: list[str]
    start_date: date
    strategy: dict[str, Any]
    warmup_period: int
    costs: CostModel
    sizing: Sizing
    limits: Limits

    @classmethod
    def parse(cls, c: dict[str, Any]) -> Config:
        """Return the planner's view of a stored config."""
        ps = c["position_size"]
        return cls(
            symbols=list(c["symbols"]),
            start_date=date.fromisoformat(c["start_date"]),
            strategy=c["strategy"],
            warmup_period=int(c["warmup_period"]),
            costs=CostModel(**c["costs"]),
            sizing=Sizing(
                method=ps["method"],
                value=float(ps.get("value", 1.0)),
                fractional=bool(c["fractional_shares"]),
                max_positions=int(c["max_positions"]),
            ),
            limits=Limits(**c["risk"]),
        )

    def signals_request(self, until: date) -> dict[str, Any]:
        """Return the backtest config whose `/signals` this deployment trades."""
        return {
            "symbols": self.symbols,
            "start_date": self.start_date.isoformat(),
            "end_date": until.isoformat(),
            "strategy": self.strategy,
            "warmup_period": self.warmup_period,
        }
