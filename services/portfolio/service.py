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
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from services.portfolio import repository as repo
from services.portfolio.drift import compare
from services.portfolio.execution import (
    Book,
    CostModel,
    Gate,
    Holding,
    Limits,
    Sizing,
    decide,
    plan_session,
)
from services.portfolio.peers import Peers, Prices
from services.portfolio.schemas import (
    Account,
    AccountCreate,
    Breakers,
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


class NothingToCompareError(AppError):
    """The deployment has not processed enough sessions for a comparison (a state, not input)."""

    status = 409
    code = "insufficient_data"
    title = "Not enough sessions"


class SimulatedCrashError(RuntimeError):
    """Raised by the `crash_after_decide` test switch (a process killed mid-session)."""


def client_order_id(
    deployment_id: uuid.UUID, day: date, symbol: str, side: str, *, closing: bool
) -> str:
    """Return the deterministic id of a deployment's order: deployment, session, symbol, side
    and whether it closes (a reversal sells to close and sells to open in one session)."""
    key = f"{deployment_id}|{day.isoformat()}|{symbol}|{side}|{'close' if closing else 'open'}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


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


class PaperBroker:
    """The embedded broker: a market order fills whole at the session's open, with the
    deployment's slippage and commission, or is rejected when cash is short."""

    name = "paper"

    def execute(
        self, *, side: str, quantity: float, quote: float, costs: CostModel, cash: float
    ) -> tuple[float, float] | str:
        """Return (fill price, commission), or the reason of a rejection."""
        sign = 1.0 if side == "buy" else -1.0
        fill = costs.fill_price(quote, sign)
        fee = costs.fee(quantity, fill)
        if sign > 0 and quantity * fill + fee > cash * (1 + 1e-12) + 1e-9:
            return f"insufficient cash: {quantity * fill + fee:.2f} needed, {cash:.2f} held"
        return fill, fee


class PortfolioService:
    """Accounts, deployments, orders and risk on the database; peers over HTTP."""

    def __init__(self, *, db: Database, peers: Peers, settings: PortfolioSettings) -> None:
        self.db = db
        self.peers = peers
        self.settings = settings
        self.broker = PaperBroker()
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.crash_after_decide = False  # a test switch: stop between deciding and sending

    async def aclose(self) -> None:
        """Close the peers' clients."""
        await self.peers.aclose()

    # ---- accounts ---------------------------------------------------------------------

    async def create_account(self, body: AccountCreate) -> Account:
        """Open an account holding only its initial cash."""
        new_id = uuid.uuid4()
        async with self.db.session() as s, s.begin():
            await repo.insert_account(
                s, id=new_id, name=body.name, broker=body.broker, initial_cash=body.initial_cash
            )
        return await self.get_account(new_id)

    async def _account_row(self, s: Any, account_id: uuid.UUID) -> dict[str, Any]:
        row = await repo.account(s, id=account_id)
        if row is None:
            raise AccountNotFoundError(f"No account {account_id}.", field="account_id")
        return row

    async def get_account(self, account_id: uuid.UUID) -> Account:
        """Return cash, equity, positions, realised and unrealised pnl and exposure."""
        async with self.db.session() as s:
            row = await self._account_row(s, account_id)
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
            await self._account_row(s, account_id)
            await repo.update_account(
                s, id=account_id, halted=True, halt_reason="kill switch (POST /halt)"
            )
        return await self.get_account(account_id)

    async def resume(self, account_id: uuid.UUID) -> Account:
        """Turn the kill switch off and lift the deployments' drawdown halts."""
        async with self.db.session() as s, s.begin():
            await self._account_row(s, account_id)
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
            await self._account_row(s, body.account_id)
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

    async def _deployment_row(self, s: Any, deployment_id: uuid.UUID) -> dict[str, Any]:
        row = await repo.deployment(s, id=deployment_id)
        if row is None:
            raise DeploymentNotFoundError(f"No deployment {deployment_id}.", field="deployment_id")
        return row

    async def get_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Return a deployment's state and config."""
        async with self.db.session() as s:
            row = await self._deployment_row(s, deployment_id)
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
            await self._deployment_row(s, deployment_id)
            await repo.update_deployment(s, id=deployment_id, status="stopped")
        return await self.get_deployment(deployment_id)

    async def run(self, deployment_id: uuid.UUID, until: date) -> RunResult:
        """Process every session up to until not processed yet (one run per deployment at once)."""
        lock = self._locks.setdefault(deployment_id, asyncio.Lock())
        async with lock:
            return await self._run(deployment_id, until)

    async def _run(self, deployment_id: uuid.UUID, until: date) -> RunResult:
        async with self.db.session() as s:
            dep = await self._deployment_row(s, deployment_id)
        if dep["status"] != "active":
            raise DeploymentStoppedError(f"Deployment {deployment_id} is stopped.")
        cfg = Config.parse(dep["config"])
        if until <= cfg.start_date:
            raise ValidationProblemError(
                f"until ({until}) must be after the deployment's start_date ({cfg.start_date}).",
                field="until",
            )
        sig = await self.peers.signals(cfg.signals_request(until))
        days = [t.date() for t in sig.timestamps]
        last = dep["last_session"]
        todo = [i for i, d in enumerate(days) if last is None or d > last]
        account_id = dep["account_id"]
        counts = {"orders": 0, "fills": 0, "refused": 0}
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

    async def _book(self, s: Any, account_id: uuid.UUID) -> tuple[dict[str, Any], Book]:
        row = await self._account_row(s, account_id)
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
            dep = await self._deployment_row(s, deployment_id)
            _, book = await self._book(s, account_id)
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
                    _, book = await self._book(s, account_id)
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
        decided = False
        async with self.db.session() as s, s.begin():
            dep = await self._deployment_row(s, deployment_id)
            existing = await repo.orders_of_session(s, deployment_id=deployment_id, day=day)
            if pending and not existing:
                row, book = await self._book(s, account_id)
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
        async with self.db.session() as s:
            stored = await repo.orders_of_session(s, deployment_id=deployment_id, day=day)
        for order in stored:
            if order["status"] == "new":
                counts["fills"] += await self._send(order, cfg.costs, opens[order["symbol"]])

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

    async def _send(self, order: dict[str, Any], costs: CostModel, quote: float) -> int:
        """Send one stored order to the broker and book its fill; return fills made (0/1)."""
        async with self.db.session() as s, s.begin():
            row = await repo.account(s, id=order["account_id"], lock=True)
            assert row is not None
            held = {p["symbol"]: p for p in await repo.positions_of(s, account_id=row["id"])}
            result = self.broker.execute(
                side=order["side"],
                quantity=order["quantity"],
                quote=quote,
                costs=costs,
                cash=row["cash"],
            )
            if isinstance(result, str):
                await repo.update_order(s, id=order["id"], status="rejected", reason=result)
                return 0
            fill, fee = result
            qty = order["quantity"]
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
                    last_price=quote,
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
                slippage_cost=abs(fill - quote) * qty,
                pnl=pnl,
            )
            await repo.update_order(s, id=order["id"], status="filled")
        return 1

    async def reconcile(self) -> int:
        """Send every order stored but never sent (a crash between deciding and sending)."""
        async with self.db.session() as s:
            outstanding = await repo.open_orders(s)
        sent = 0
        for order in outstanding:
            async with self.db.session() as s:
                dep = await repo.deployment(s, id=order["deployment_id"])
            if dep is None:
                continue
            cfg = Config.parse(dep["config"])
            day: date = order["session"]
            prices = await self.peers.prices(order["symbol"], day, day + timedelta(days=1))
            sent += await self._send(order, cfg.costs, prices.open[day])
        return sent

    async def drift(self, deployment_id: uuid.UUID) -> Drift:
        """Compare the deployment's record with `POST /backtest` of its config on its sessions."""
        async with self.db.session() as s:
            dep = await self._deployment_row(s, deployment_id)
            account = await self._account_row(s, dep["account_id"])
            paper = await repo.deployment_fills(s, deployment_id=deployment_id)
            history = await repo.equity_history(s, account_id=dep["account_id"])
        last: date | None = dep["last_session"]
        c = dep["config"]
        cfg = Config.parse(c)
        if last is None or last <= cfg.start_date:
            raise NothingToCompareError(
                "The deployment has not processed two sessions yet: run it first "
                "(POST /deployments/{id}/run)."
            )
        body = {
            **cfg.signals_request(last),
            **c["costs"],
            "position_size": c["position_size"],
            "max_positions": c["max_positions"],
            "fractional_shares": c["fractional_shares"],
            "initial_capital": account["initial_cash"],
            "equity_points": 20_000,
        }
        result, theirs = await self.peers.backtest_run(body)
        curve = result["equity"]
        backtest_equity = {
            date.fromisoformat(str(t)[:10]): float(v)
            for t, v in zip(curve["timestamps"], curve["equity"], strict=True)
        }
        ours = [{**f, "timestamp": aware(f["timestamp"]).isoformat()} for f in paper]
        return compare(
            paper_fills=ours,
            backtest_fills=theirs,
            paper_equity={h["session"]: h["equity"] for h in history},
            backtest_equity=backtest_equity,
            run_id=str(result["run_id"]),
        )

    # ---- lists and risk ---------------------------------------------------------------

    async def list_orders(self, account_id: uuid.UUID, *, limit: int, offset: int) -> OrderList:
        """Return a page of an account's orders, oldest first."""
        async with self.db.session() as s:
            await self._account_row(s, account_id)
            rows, total = await repo.page(
                s, table="orders", account_id=account_id, limit=limit, offset=offset
            )
        items = [Order(**{k: r[k] for k in Order.model_fields if k in r}) for r in rows]
        return OrderList(orders=items, page=Page.of(total, limit, offset, len(items)))

    async def list_fills(self, account_id: uuid.UUID, *, limit: int, offset: int) -> FillList:
        """Return a page of an account's fills, oldest first."""
        async with self.db.session() as s:
            await self._account_row(s, account_id)
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

    async def risk(self, account_id: uuid.UUID) -> Risk:
        """Return exposure by symbol, historical VaR/CVaR, correlation, drawdown, breakers."""
        account = await self.get_account(account_id)
        async with self.db.session() as s:
            history = await repo.equity_history(s, account_id=account_id)
            deps = await repo.deployments_of(s, account_id=account_id)
            last = history[-1]["session"] if history else None
            n_orders = await repo.count_orders(s, account_id=account_id, day=last) if last else 0
        eq = account.equity
        peak = max([account.initial_cash, *(h["equity"] for h in history)])
        held = [p for p in account.positions if p.quantity != 0]
        returns: dict[str, np.ndarray] = {}
        if held and last is not None:
            start = last - timedelta(days=int(self.settings.portfolio_var_window * 1.5) + 10)
            got = await asyncio.gather(*(self.peers.prices(p.symbol, start, last) for p in held))
            common = sorted(set.intersection(*(set(g.close) for g in got)))
            common = common[-(self.settings.portfolio_var_window + 1) :]
            for p, g in zip(held, got, strict=True):
                closes = np.array([g.close[d] for d in common])
                returns[p.symbol] = np.diff(closes) / closes[:-1]
        var = cvar = None
        obs = min((len(r) for r in returns.values()), default=0)
        corr: dict[str, dict[str, float | None]] = {}
        if obs >= 20:
            pnl = sum(p.market_value * returns[p.symbol] for p in held)
            assert isinstance(pnl, np.ndarray)
            q = float(np.quantile(pnl, 0.05))
            var = -q
            cvar = -float(pnl[pnl <= q].mean())
            for a in held:
                corr[a.symbol] = {}
                for b in held:
                    c = np.corrcoef(returns[a.symbol], returns[b.symbol])[0, 1]
                    corr[a.symbol][b.symbol] = float(c) if np.isfinite(c) else None
        return Risk(
            account_id=account_id,
            equity=eq,
            exposure_by_symbol={p.symbol: p.market_value / eq if eq else 0.0 for p in held},
            gross_exposure=account.exposure,
            var_95=var,
            cvar_95=cvar,
            observations=obs,
            correlation=corr,
            drawdown=max(0.0, (peak - eq) / peak) if peak > 0 else 0.0,
            peak_equity=peak,
            breakers=Breakers(
                kill_switch=account.halted,
                kill_reason=account.halt_reason,
                halted_deployments={
                    str(d["id"]): d["halt_reason"] for d in deps if d["halt_reason"]
                },
                orders_last_session=n_orders,
                last_session=last,
            ),
        )


def aware(t: datetime) -> datetime:
    """Return t as UTC-aware (SQLite hands timestamps back naive, in UTC)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
