"""The portfolio's rules: accounts, deployments run session by session, the paper broker, risk.

A deployment trades on the backtest's `POST /signals` (never its own strategy code); each
session's orders are decided, stored with a deterministic `client_order_id` (deployment,
session, symbol, side) and only then sent to the broker, so a crash between the two never
doubles an order: the next run (or the start-up reconciliation) sends what is still `new`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from services.portfolio import repository as repo
from services.portfolio.alpaca import AlpacaBroker, alpaca_client
from services.portfolio.brokers import Broker, Execution, PaperBroker, Ticket
from services.portfolio.execution import (
    Book,
    Config,
    CostModel,
    Gate,
    Holding,
    decide,
    plan_session,
)
from services.portfolio.live import run_live, sync_book
from services.portfolio.peers import Peers, Prices
from services.portfolio.reports import drift_of, risk_of
from services.portfolio.repository import aware
from services.portfolio.schemas import (
    Account,
    AccountCreate,
    Deployment,
    DeploymentCreate,
    Drift,
    Fill,
    FillList,
    Order,
    OrderList,
    Page,
    Position,
    Risk,
    RunResult,
)
from services.portfolio.settings import PortfolioSettings
from shared.db import Database
from shared.errors import AppError, NotFoundError, ValidationProblemError

log = logging.getLogger(__name__)


class AccountNotFoundError(NotFoundError):
    """No account has that id."""

    code = "account_not_found"


class DeploymentNotFoundError(NotFoundError):
    """No deployment has that id."""

    code = "deployment_not_found"


class DeploymentStoppedError(AppError):
    """The deployment was stopped (DELETE): it runs no more."""

    status = 409
    code = "deployment_stopped"
    title = "Deployment stopped"


class AlpacaAccountTakenError(AppError):
    """An account already trades the Alpaca account of the stored keys."""

    status = 409
    code = "alpaca_account_exists"
    title = "Alpaca account already open"


class SimulatedCrashError(RuntimeError):
    """Raised by the `crash_after_decide` test switch (a process killed mid-session)."""


def client_order_id(
    deployment_id: uuid.UUID, day: date, symbol: str, side: str, *, closing: bool
) -> str:
    """Return the deterministic id of a deployment's order: deployment, session, symbol, side
    and whether it closes (a reversal sells to close and sells to open in one session)."""
    key = f"{deployment_id}|{day.isoformat()}|{symbol}|{side}|{'close' if closing else 'open'}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class PortfolioService:
    """Accounts, deployments, orders and risk on the database; peers over HTTP."""

    def __init__(self, *, db: Database, peers: Peers, settings: PortfolioSettings) -> None:
        self.db = db
        self.peers = peers
        self.settings = settings
        self.paper = PaperBroker()
        self._alpaca: AlpacaBroker | None = None
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.crash_after_decide = False  # a test switch: stop between deciding and sending

    async def aclose(self) -> None:
        """Close the peers' clients."""
        await self.peers.aclose()

    def broker_for(self, name: str) -> Broker:
        """Return the broker of an account (Alpaca's client is built on first use)."""
        return self.paper if name == "paper" else self.alpaca()

    def alpaca(self) -> AlpacaBroker:
        """Return the Alpaca broker (a problem when its keys or the live switch are missing)."""
        if self._alpaca is None:
            self._alpaca = AlpacaBroker(alpaca_client(self.settings))
        return self._alpaca

    # ---- accounts ---------------------------------------------------------------------

    async def create_account(self, body: AccountCreate) -> Account:
        """Open an account holding only its initial cash (`alpaca`: the broker's book, one
        account per key set)."""
        new_id = uuid.uuid4()
        cash = body.initial_cash
        if body.broker == "alpaca":  # the broker's account is the book: its equity, its cash
            async with self.db.session() as s:
                taken = await repo.accounts_of_broker(s, broker="alpaca")
            if taken:
                raise AlpacaAccountTakenError(
                    f"Account {taken[0]} already trades the Alpaca account of the stored keys; "
                    "two accounts on one broker book would count its positions twice.",
                    field="broker",
                )
            cash = (await self.alpaca().account()).equity
        async with self.db.session() as s, s.begin():
            await repo.insert_account(
                s, id=new_id, name=body.name, broker=body.broker, initial_cash=cash
            )
        if body.broker == "alpaca":
            await sync_book(self, new_id, self.alpaca())
        return await self.get_account(new_id)

    async def account_row(self, s: Any, account_id: uuid.UUID) -> dict[str, Any]:
        row = await repo.account(s, id=account_id)
        if row is None:
            raise AccountNotFoundError(f"No account {account_id}.", field="account_id")
        return row

    async def get_account(self, account_id: uuid.UUID) -> Account:
        """Return cash, equity, positions, realised and unrealised pnl and exposure."""
        async with self.db.session() as s:
            row = await self.account_row(s, account_id)
            held = await repo.positions_of(s, account_id=account_id)
        pos = [
            Position(
                symbol=p["symbol"],
                quantity=p["quantity"],
                average_price=p["average_price"],
                last_price=p["last_price"],
                market_value=p["quantity"] * p["last_price"],
                unrealised_pnl=p["quantity"] * (p["last_price"] - p["average_price"]),
            )
            for p in held
        ]
        eq = row["cash"] + sum(p.market_value for p in pos)
        gross = sum(abs(p.market_value) for p in pos)
        return Account(
            id=row["id"],
            name=row["name"],
            broker=row["broker"],
            initial_cash=row["initial_cash"],
            cash=row["cash"],
            equity=eq,
            positions=pos,
            realised_pnl=row["realised_pnl"],
            unrealised_pnl=sum(p.unrealised_pnl for p in pos),
            exposure=gross / eq if eq > 0 else 0.0,
            halted=row["halted"],
            halt_reason=row["halt_reason"],
            created_at=aware(row["created_at"]),
        )

    async def halt(self, account_id: uuid.UUID) -> Account:
        """Turn the kill switch on: the risk manager refuses every order until resumed."""
        async with self.db.session() as s, s.begin():
            await self.account_row(s, account_id)
            await repo.update_account(
                s, id=account_id, halted=True, halt_reason="kill switch (POST /halt)"
            )
        return await self.get_account(account_id)

    async def resume(self, account_id: uuid.UUID) -> Account:
        """Turn the kill switch off and lift the deployments' drawdown halts."""
        async with self.db.session() as s, s.begin():
            await self.account_row(s, account_id)
            await repo.update_account(s, id=account_id, halted=False, halt_reason=None)
            for d in await repo.deployments_of(s, account_id=account_id):
                if d["halt_reason"]:
                    await repo.update_deployment(s, id=d["id"], halt_reason=None)
        return await self.get_account(account_id)

    # ---- deployments ------------------------------------------------------------------

    async def create_deployment(self, body: DeploymentCreate) -> Deployment:
        """Store a deployment after the backtest has accepted its strategy."""
        symbols = [s.upper() for s in body.symbols]
        if len(set(symbols)) != len(symbols):
            raise ValidationProblemError("Each symbol at most once.", field="symbols")
        start = body.start_date or datetime.now(UTC).date()
        async with self.db.session() as s:
            await self.account_row(s, body.account_id)
        config = body.model_dump(mode="json", exclude={"account_id"})
        config.update(symbols=symbols, start_date=start.isoformat())
        # the backtest validates the strategy on a year before the start (its own 422s)
        probe = Config.parse(config).signals_request(start)
        probe["start_date"] = (start - timedelta(days=365)).isoformat()
        probe["warmup_period"] = 0
        try:
            await self.peers.signals(probe)
        except ValidationProblemError as e:
            if (e.field or "").startswith("strategy"):
                raise
        new_id = uuid.uuid4()
        async with self.db.session() as s, s.begin():
            await repo.insert_deployment(s, id=new_id, account_id=body.account_id, config=config)
        return await self.get_deployment(new_id)

    async def deployment_row(self, s: Any, deployment_id: uuid.UUID) -> dict[str, Any]:
        row = await repo.deployment(s, id=deployment_id)
        if row is None:
            raise DeploymentNotFoundError(f"No deployment {deployment_id}.", field="deployment_id")
        return row

    async def get_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Return a deployment's state and config."""
        async with self.db.session() as s:
            row = await self.deployment_row(s, deployment_id)
        return Deployment(
            id=row["id"],
            account_id=row["account_id"],
            status=row["status"],
            halt_reason=row["halt_reason"],
            last_session=row["last_session"],
            pending=row["pending"],
            config=row["config"],
            created_at=aware(row["created_at"]),
        )

    async def stop_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Stop a deployment: it decides no more orders (positions stay)."""
        async with self.db.session() as s, s.begin():
            await self.deployment_row(s, deployment_id)
            await repo.update_deployment(s, id=deployment_id, status="stopped")
        return await self.get_deployment(deployment_id)

    async def sessions_to_run(self, deployment_id: uuid.UUID, until: date) -> int:
        """Return the weekdays a run up to until would process (an upper bound of the
        exchange sessions, known without asking a peer): what decides job or not."""
        async with self.db.session() as s:
            dep = await self.deployment_row(s, deployment_id)
        after = dep["last_session"] or date.fromisoformat(dep["config"]["start_date"]) - timedelta(
            days=1
        )
        if until <= after:
            return 0
        return int(np.busday_count(after + timedelta(days=1), until + timedelta(days=1)))

    async def run(self, deployment_id: uuid.UUID, until: date) -> RunResult:
        """Process every session up to until not processed yet (one run per deployment at once)."""
        lock = self._locks.setdefault(deployment_id, asyncio.Lock())
        async with lock:
            return await self._run(deployment_id, until)

    async def _run(self, deployment_id: uuid.UUID, until: date) -> RunResult:
        async with self.db.session() as s:
            dep = await self.deployment_row(s, deployment_id)
        if dep["status"] != "active":
            raise DeploymentStoppedError(f"Deployment {deployment_id} is stopped.")
        cfg = Config.parse(dep["config"])
        if until <= cfg.start_date:
            raise ValidationProblemError(
                f"until ({until}) must be after the deployment's start_date ({cfg.start_date}).",
                field="until",
            )
        sig = await self.peers.signals(cfg.signals_request(until))
        account_id = dep["account_id"]
        counts = {"orders": 0, "fills": 0, "refused": 0}
        async with self.db.session() as s:
            broker = (await self.account_row(s, account_id))["broker"]
        if broker == "alpaca":
            first, last_done, n = await run_live(self, dep, cfg, sig, self.alpaca(), until, counts)
            account = await self.get_account(account_id)
            return RunResult(
                deployment_id=deployment_id,
                sessions=n,
                first_session=first,
                last_session=last_done,
                equity=account.equity,
                **counts,
            )
        days = [t.date() for t in sig.timestamps]
        last = dep["last_session"]
        todo = [i for i, d in enumerate(days) if last is None or d > last]
        if todo:
            first = days[todo[0]]
            prices = dict(
                zip(
                    cfg.symbols,
                    await asyncio.gather(
                        *(self.peers.prices(sym, first, days[-1]) for sym in cfg.symbols)
                    ),
                    strict=True,
                )
            )
            wishes = {x.symbol.upper(): x.wishes for x in sig.series}
            await self._sessions(deployment_id, account_id, cfg, days, todo, wishes, prices, counts)
        account = await self.get_account(account_id)
        return RunResult(
            deployment_id=deployment_id,
            sessions=len(todo),
            first_session=days[todo[0]] if todo else None,
            last_session=days[todo[-1]] if todo else None,
            equity=account.equity,
            **counts,
        )

    async def book_of(self, s: Any, account_id: uuid.UUID) -> tuple[dict[str, Any], Book]:
        row = await self.account_row(s, account_id)
        held = await repo.positions_of(s, account_id=account_id)
        book = Book(
            cash=row["cash"],
            holdings={
                p["symbol"]: Holding(p["quantity"], p["average_price"], p["entry_commission"])
                for p in held
            },
        )
        return row, book

    async def _sessions(
        self,
        deployment_id: uuid.UUID,
        account_id: uuid.UUID,
        cfg: Config,
        days: list[date],
        todo: list[int],
        wishes: dict[str, list[int | None]],
        prices: dict[str, Prices],
        counts: dict[str, int],
    ) -> None:
        """Process sessions in order: at each open the pending wishes become orders
        (decided, stored, then sent), at each close the next wishes are read.

        Sessions without an order are kept in memory and written together (equity by
        session, progress) before the next session that trades and at the end; a crash
        in between only makes the next run process them again.
        """
        async with self.db.session() as s:
            dep = await self.deployment_row(s, deployment_id)
            _, book = await self.book_of(s, account_id)
        pending: dict[str, int] = dict(dep["pending"])
        marks: list[tuple[date, float, float]] = []  # (session, equity, cash) not written yet
        closes: dict[str, float] = {}

        async def flush(last: date) -> None:
            async with self.db.session() as s, s.begin():
                await repo.put_equity_rows(s, account_id=account_id, rows=marks)
                if closes:
                    await repo.mark_positions(s, account_id=account_id, prices=closes)
                await repo.update_deployment(
                    s, id=deployment_id, last_session=last, pending=pending
                )
            marks.clear()

        prev: date | None = None
        for k, i in enumerate(todo):
            day = days[i]
            opens = {sym: prices[sym].open[day] for sym in cfg.symbols}
            recovering = k == 0 and dep["last_session"] is not None
            if pending or k == 0 or recovering:
                if prev is not None:
                    await flush(prev)
                await self._open(deployment_id, account_id, cfg, day, pending, opens, counts)
                async with self.db.session() as s:
                    _, book = await self.book_of(s, account_id)
            closes = {sym: prices[sym].close[day] for sym in cfg.symbols}
            net, _ = book.values(closes)
            marks.append((day, book.cash + net, book.cash))
            today = {sym: wishes[sym][i] for sym in cfg.symbols}
            pending = decide(today, book) if i >= cfg.warmup_period else {}
            prev = day
        if prev is not None:
            await flush(prev)

    async def _open(
        self,
        deployment_id: uuid.UUID,
        account_id: uuid.UUID,
        cfg: Config,
        day: date,
        pending: dict[str, int],
        opens: dict[str, float],
        counts: dict[str, int],
    ) -> None:
        """Execute a session's open: decide and store its orders once, then send the new."""
        async with self.db.session() as s:
            dep = await self.deployment_row(s, deployment_id)
        await self.decide_orders(dep, cfg, day, pending, opens, counts)
        async with self.db.session() as s:
            stored = await repo.orders_of_session(s, deployment_id=deployment_id, day=day)
        for order in stored:
            if order["status"] == "new":
                counts["fills"] += await self.send(
                    order, quote=opens[order["symbol"]], costs=cfg.costs
                )

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
            dep = await self.deployment_row(s, deployment_id)
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
            name = (await self.account_row(s, order["account_id"]))["broker"]
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

    async def reconcile(self) -> int:
        """Send every paper order stored but never sent (a crash between deciding and
        sending); on each Alpaca account send or look up its open orders and take the
        broker's positions and cash. Return the orders sent or booked."""
        async with self.db.session() as s:
            outstanding = await repo.open_orders(s)
            live = await repo.accounts_of_broker(s, broker="alpaca")
        sent = 0
        for order in outstanding:
            if order["account_id"] in live:
                continue
            async with self.db.session() as s:
                dep = await repo.deployment(s, id=order["deployment_id"])
            if dep is None:
                continue
            cfg = Config.parse(dep["config"])
            day: date = order["session"]
            prices = await self.peers.prices(order["symbol"], day, day + timedelta(days=1))
            sent += await self.send(order, quote=prices.open[day], costs=cfg.costs)
        for account_id in live:
            sent += await sync_book(self, account_id, self.alpaca())
        return sent

    async def drift(self, deployment_id: uuid.UUID) -> Drift:
        """Compare the deployment's record with `POST /backtest` of its config on its sessions."""
        return await drift_of(self, deployment_id)

    async def risk(self, account_id: uuid.UUID) -> Risk:
        """Return exposure by symbol, historical VaR/CVaR, correlation, drawdown, breakers."""
        return await risk_of(self, account_id)

    # ---- lists ---------------------------------------------------------------

    async def list_orders(self, account_id: uuid.UUID, *, limit: int, offset: int) -> OrderList:
        """Return a page of an account's orders, oldest first."""
        async with self.db.session() as s:
            await self.account_row(s, account_id)
            rows, total = await repo.page(
                s, table="orders", account_id=account_id, limit=limit, offset=offset
            )
        items = [Order(**{k: r[k] for k in Order.model_fields if k in r}) for r in rows]
        return OrderList(orders=items, page=_page(total, limit, offset, len(items)))

    async def list_fills(self, account_id: uuid.UUID, *, limit: int, offset: int) -> FillList:
        """Return a page of an account's fills, oldest first."""
        async with self.db.session() as s:
            await self.account_row(s, account_id)
            rows, total = await repo.page(
                s, table="fills", account_id=account_id, limit=limit, offset=offset
            )
        items = [
            Fill(
                timestamp=aware(r["timestamp"]),
                symbol=r["symbol"],
                direction=r["direction"],
                shares=r["shares"],
                price=r["price"],
                commission=r["commission"],
                slippage_cost=r["slippage_cost"],
                total_cost=r["shares"] * r["price"] + r["commission"],
                pnl=r["pnl"],
                order_id=r["order_id"],
            )
            for r in rows
        ]
        return FillList(fills=items, page=_page(total, limit, offset, len(items)))


def _page(total: int, limit: int, offset: int, returned: int) -> Page:
    nxt = offset + returned if offset + returned < total else None
    return Page(total=total, limit=limit, offset=offset, returned=returned, next_offset=nxt)
