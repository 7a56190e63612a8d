"""The portfolio's rules: accounts, deployments run session by session, risk.

A deployment trades on the backtest's `POST /signals` (never its own strategy code); each
session's orders are decided, stored with a deterministic `client_order_id` (deployment,
session, symbol, side) and only then sent to the broker, so a crash between the two never
doubles an order: the next run (or the start-up reconciliation) sends what is still `new`.
Deciding, sending and booking orders is the order desk's (:mod:`services.portfolio.orders`,
held as `PortfolioService.orders`); drift and risk are :mod:`services.portfolio.reports`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np

from services.portfolio import repository as repo
from services.portfolio.execution import Config, decide
from services.portfolio.live import run_live, sync_book
from services.portfolio.orders import OrderDesk, account_row, deployment_row
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
from shared.errors import AppError, ValidationProblemError

log = logging.getLogger(__name__)


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


class PortfolioService:
    """Accounts, deployments, orders and risk on the database; peers over HTTP."""

    def __init__(self, *, db: Database, peers: Peers, settings: PortfolioSettings) -> None:
        self.db = db
        self.peers = peers
        self.settings = settings
        self.orders = OrderDesk(db=db, settings=settings)
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def aclose(self) -> None:
        """Close the peers' clients."""
        await self.peers.aclose()

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
            cash = (await self.orders.alpaca().account()).equity
        async with self.db.session() as s, s.begin():
            await repo.insert_account(
                s, id=new_id, name=body.name, broker=body.broker, initial_cash=cash
            )
        if body.broker == "alpaca":
            await sync_book(self.orders, new_id, self.orders.alpaca())
        return await self.get_account(new_id)

    async def get_account(self, account_id: uuid.UUID) -> Account:
        """Return cash, equity, positions, realised and unrealised pnl and exposure."""
        async with self.db.session() as s:
            row = await account_row(s, account_id)
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
            await account_row(s, account_id)
            await repo.update_account(
                s, id=account_id, halted=True, halt_reason="kill switch (POST /halt)"
            )
        return await self.get_account(account_id)

    async def resume(self, account_id: uuid.UUID) -> Account:
        """Turn the kill switch off and lift the deployments' drawdown halts."""
        async with self.db.session() as s, s.begin():
            await account_row(s, account_id)
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
            await account_row(s, body.account_id)
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

    async def get_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Return a deployment's state and config."""
        async with self.db.session() as s:
            row = await deployment_row(s, deployment_id)
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
            await deployment_row(s, deployment_id)
            await repo.update_deployment(s, id=deployment_id, status="stopped")
        return await self.get_deployment(deployment_id)

    async def sessions_to_run(self, deployment_id: uuid.UUID, until: date) -> int:
        """Return the weekdays a run up to until would process (an upper bound of the
        exchange sessions, known without asking a peer): what decides job or not."""
        async with self.db.session() as s:
            dep = await deployment_row(s, deployment_id)
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
            dep = await deployment_row(s, deployment_id)
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
            broker = (await account_row(s, account_id))["broker"]
        if broker == "alpaca":
            first, last_done, n = await run_live(
                self.orders, self.peers, dep, cfg, sig, self.orders.alpaca(), until, counts
            )
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
            dep = await deployment_row(s, deployment_id)
            _, book = await self.orders.book_of(s, account_id)
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
                    _, book = await self.orders.book_of(s, account_id)
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
            dep = await deployment_row(s, deployment_id)
        await self.orders.decide_orders(dep, cfg, day, pending, opens, counts)
        async with self.db.session() as s:
            stored = await repo.orders_of_session(s, deployment_id=deployment_id, day=day)
        for order in stored:
            if order["status"] == "new":
                counts["fills"] += await self.orders.send(
                    order, quote=opens[order["symbol"]], costs=cfg.costs
                )

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
            sent += await self.orders.send(order, quote=prices.open[day], costs=cfg.costs)
        for account_id in live:
            sent += await sync_book(self.orders, account_id, self.orders.alpaca())
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
            await account_row(s, account_id)
            rows, total = await repo.page(
                s, table="orders", account_id=account_id, limit=limit, offset=offset
            )
        items = [Order(**{k: r[k] for k in Order.model_fields if k in r}) for r in rows]
        return OrderList(orders=items, page=Page.of(total, limit, offset, len(items)))

    async def list_fills(self, account_id: uuid.UUID, *, limit: int, offset: int) -> FillList:
        """Return a page of an account's fills, oldest first."""
        async with self.db.session() as s:
            await account_row(s, account_id)
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
        return FillList(fills=items, page=Page.of(total, limit, offset, len(items)))
