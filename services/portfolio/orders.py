"""The portfolio's order desk: a session's orders decided past the risk manager and stored
once under a deterministic `client_order_id`, sent to the account's broker, and the broker's
answer booked (cash, positions, realised pnl, fills).

Storing before sending is what makes a run safe to repeat: an order still `new` after a
crash is sent by the next run or by the start-up reconciliation, never decided twice.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date
from typing import Any

from services.portfolio import repository as repo
from services.portfolio.alpaca import AlpacaBroker, alpaca_client
from services.portfolio.brokers import Broker, Execution, PaperBroker, Ticket
from services.portfolio.execution import Book, Config, CostModel, Gate, Holding, plan_session
from services.portfolio.settings import PortfolioSettings
from shared.db import Database
from shared.errors import NotFoundError


class AccountNotFoundError(NotFoundError):
    """No account has that id."""

    code = "account_not_found"


class DeploymentNotFoundError(NotFoundError):
    """No deployment has that id."""

    code = "deployment_not_found"


class SimulatedCrashError(RuntimeError):
    """Raised by the `crash_after_decide` test switch (a process killed mid-session)."""


def client_order_id(
    deployment_id: uuid.UUID, day: date, symbol: str, side: str, *, closing: bool
) -> str:
    """Return the deterministic id of a deployment's order: deployment, session, symbol, side
    and whether it closes (a reversal sells to close and sells to open in one session)."""
    key = f"{deployment_id}|{day.isoformat()}|{symbol}|{side}|{'close' if closing else 'open'}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


async def account_row(s: Any, account_id: uuid.UUID) -> dict[str, Any]:
    """Return an account's row in session s (AccountNotFoundError when there is none)."""
    row = await repo.account(s, id=account_id)
    if row is None:
        raise AccountNotFoundError(f"No account {account_id}.", field="account_id")
    return row


async def deployment_row(s: Any, deployment_id: uuid.UUID) -> dict[str, Any]:
    """Return a deployment's row in session s (DeploymentNotFoundError when there is none)."""
    row = await repo.deployment(s, id=deployment_id)
    if row is None:
        raise DeploymentNotFoundError(f"No deployment {deployment_id}.", field="deployment_id")
    return row


class OrderDesk:
    """Decide, gate, send and book the orders of every account, on its broker."""

    def __init__(self, *, db: Database, settings: PortfolioSettings) -> None:
        self.db = db
        self.settings = settings
        self.paper = PaperBroker()
        self._alpaca: AlpacaBroker | None = None
        self.crash_after_decide = False  # a test switch: stop between deciding and sending

    def broker_for(self, name: str) -> Broker:
        """Return the broker of an account (Alpaca's client is built on first use)."""
        return self.paper if name == "paper" else self.alpaca()

    def alpaca(self) -> AlpacaBroker:
        """Return the Alpaca broker (a problem when its keys or the live switch are missing)."""
        if self._alpaca is None:
            self._alpaca = AlpacaBroker(alpaca_client(self.settings))
        return self._alpaca

    async def book_of(self, s: Any, account_id: uuid.UUID) -> tuple[dict[str, Any], Book]:
        row = await account_row(s, account_id)
        held = await repo.positions_of(s, account_id=account_id)
        book = Book(
            cash=row["cash"],
            holdings={
                p["symbol"]: Holding(p["quantity"], p["average_price"], p["entry_commission"])
                for p in held
            },
        )
        return row, book

    async def decide_orders(
        self,
        dep: dict[str, Any],
        cfg: Config,
        day: date,
        pending: dict[str, int],
        quotes: dict[str, float],
        counts: dict[str, int],
    ) -> None:
        """Decide and store a session's orders at quotes, once (a session that has orders
        keeps them): each past the risk manager, under its deterministic client_order_id."""
        decided = False
        deployment_id, account_id = dep["id"], dep["account_id"]
        opens = quotes
        async with self.db.session() as s, s.begin():
            dep = await deployment_row(s, deployment_id)
            existing = await repo.orders_of_session(s, deployment_id=deployment_id, day=day)
            if pending and not existing:
                row, book = await self.book_of(s, account_id)
                gate = await self._gate(s, row, dep, cfg, book, opens, day)
                planned = plan_session(
                    book,
                    pending,
                    opens,
                    symbols=cfg.symbols,
                    sizing=cfg.sizing,
                    costs=cfg.costs,
                    limits=cfg.limits,
                    gate=gate,
                )
                for p in planned:
                    await repo.insert_order(
                        s,
                        account_id=account_id,
                        deployment_id=deployment_id,
                        client_order_id=client_order_id(
                            deployment_id, day, p.symbol, p.side, closing=p.closing
                        ),
                        session=day,
                        symbol=p.symbol,
                        side=p.side,
                        quantity=p.quantity,
                        requested=p.requested,
                        status=p.status,
                        reason=p.reason,
                    )
                    counts["orders"] += 1
                    counts["refused"] += p.status == "refused"
                    decided = True
        if self.crash_after_decide and decided:  # tests: killed between deciding and sending
            raise SimulatedCrashError("stopped between deciding and sending (test switch)")

    async def _gate(
        self,
        s: Any,
        row: dict[str, Any],
        dep: dict[str, Any],
        cfg: Config,
        book: Book,
        opens: dict[str, float],
        day: date,
    ) -> Gate:
        """Return what the risk manager lets through at this open (and trip its breakers)."""
        day_orders = await repo.count_orders(s, account_id=row["id"], day=day)
        history = await repo.equity_history(s, account_id=row["id"])
        net, _ = book.values(opens)
        eq = book.cash + net
        gate = Gate(orders_so_far=day_orders)
        if row["halted"]:
            gate.halted = row["halt_reason"] or "kill switch"
        elif dep["halt_reason"]:
            gate.halted = dep["halt_reason"]
        peak = max([row["initial_cash"], *(h["equity"] for h in history)])
        lim = cfg.limits
        if gate.halted is None and lim.max_drawdown is not None and peak > 0:
            dd = (peak - eq) / peak
            if dd > lim.max_drawdown:
                gate.halted = (
                    f"max_drawdown: equity {eq:.2f} is {dd:.2%} below its peak {peak:.2f} "
                    f"(limit {lim.max_drawdown:.2%}); POST /accounts/{{id}}/resume lifts it"
                )
                await repo.update_deployment(s, id=dep["id"], halt_reason=gate.halted)
        prev = history[-1]["equity"] if history else row["initial_cash"]
        if lim.daily_loss_limit is not None and prev > 0:
            loss = (prev - eq) / prev
            if loss > lim.daily_loss_limit:
                gate.no_entries = (
                    f"daily_loss_limit: {loss:.2%} below the previous close (limit "
                    f"{lim.daily_loss_limit:.2%}); no new entries this session"
                )
        return gate

    async def send(
        self, order: dict[str, Any], *, quote: float, costs: CostModel | None = None
    ) -> int:
        """Send one stored order to its account's broker and book what it answers; return
        fills booked (0/1). The paper broker fills at quote under the account's lock; a live
        broker is called outside any transaction and answers `submitted` until it fills."""
        ticket = Ticket(order["client_order_id"], order["symbol"], order["side"], order["quantity"])
        model = costs or CostModel()
        async with self.db.session() as s:
            name = (await account_row(s, order["account_id"]))["broker"]
        broker = self.broker_for(name)
        if broker is not self.paper:
            execution = await broker.submit(ticket, quote=quote, costs=model, cash=0.0)
            async with self.db.session() as s, s.begin():
                return await self.record(s, order, execution, quote=quote)
        async with self.db.session() as s, s.begin():
            row = await repo.account(s, id=order["account_id"], lock=True)
            assert row is not None
            execution = await broker.submit(ticket, quote=quote, costs=model, cash=row["cash"])
            return await self.record(s, order, execution, quote=quote)

    async def record(
        self, s: Any, order: dict[str, Any], execution: Execution, *, quote: float
    ) -> int:
        """Book a broker's answer to an order in the caller's transaction: the fill (cash,
        position, realised pnl), or the order's new status; return fills booked (0/1)."""
        if execution.status != "filled" or execution.price is None:
            status = "submitted" if execution.status == "submitted" else "rejected"
            await repo.update_order(s, id=order["id"], status=status, reason=execution.reason)
            return 0
        row = await repo.account(s, id=order["account_id"], lock=True)
        assert row is not None
        held = {p["symbol"]: p for p in await repo.positions_of(s, account_id=row["id"])}
        fill, fee, qty = execution.price, execution.commission, execution.quantity
        sign = 1.0 if order["side"] == "buy" else -1.0
        cash = row["cash"] - sign * qty * fill - fee
        pos = held.get(order["symbol"])
        pnl: float | None = None
        realised = row["realised_pnl"]
        if pos is not None and pos["quantity"] * sign < 0:  # closing
            q = pos["quantity"]
            pnl = q * (fill - pos["average_price"]) - pos["entry_commission"] - fee
            realised += pnl
            await repo.delete_position(s, account_id=row["id"], symbol=order["symbol"])
        else:
            await repo.put_position(
                s,
                account_id=row["id"],
                symbol=order["symbol"],
                quantity=sign * qty,
                average_price=fill,
                entry_commission=fee,
                last_price=quote or fill,
            )
        await repo.update_account(s, id=row["id"], cash=cash, realised_pnl=realised)
        await repo.insert_fill(
            s,
            account_id=row["id"],
            order_id=order["id"],
            timestamp=repo.as_utc(order["session"]),
            symbol=order["symbol"],
            direction=order["side"],
            shares=qty,
            price=fill,
            commission=fee,
            slippage_cost=abs(fill - quote) * qty if quote else 0.0,
            pnl=pnl,
        )
        await repo.update_order(s, id=order["id"], status="filled", reason=execution.reason)
        return 1
