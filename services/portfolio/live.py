"""Deployments on a live broker (Alpaca): only the latest closed session is traded.

The paper broker replays history because it fills at opens it looks up. Alpaca fills what
it is sent, when it is sent, at the market's price: a session in the past cannot be traded.
So `run` on an Alpaca account:

1. reads the broker's clock: an `until` before the last day whose session has ended is a
   replay, refused (409 `replay_not_supported`); the session traded is the last bar the
   market service has up to `until`;
2. reconciles first: every order still `new` is sent (idempotent by client_order_id), every
   `submitted` one is looked up and booked at Alpaca's fill price, and the stored positions
   and cash are set to Alpaca's;
3. marks the sessions before the latest as read but not traded (at a first run they only
   warm the strategy: the deployment starts from the broker's book);
4. at the latest close decides the wishes as the backtest does, sizes them at that close
   past the risk manager, stores the orders under the next session's client_order_ids and
   sends them as market day orders: after hours Alpaca fills them at the next open (the
   orders' session); while the market is open, at once at its price (today's session).
   The next run (or start) books those fills.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from services.portfolio import repository as repo
from services.portfolio.alpaca import AlpacaBroker
from services.portfolio.brokers import BrokerClock, ReplayNotSupportedError
from services.portfolio.execution import Config, decide
from services.portfolio.orders import OrderDesk
from services.portfolio.peers import Peers, Signals


def last_closed_day(clock: BrokerClock) -> date:
    """Return the last calendar day whose session (if it had one) has ended by the clock."""
    today = clock.timestamp.date()
    ended = not clock.is_open and clock.next_open.date() > today
    return today if ended else today - timedelta(days=1)


async def sync_book(desk: OrderDesk, account_id: Any, broker: AlpacaBroker) -> int:
    """Send the account's unsent orders, book the filled ones, then take Alpaca's positions
    and cash as the account's; return the fills booked."""
    done = 0
    async with desk.db.session() as s:
        outstanding = await repo.unsettled_orders(s, account_id=account_id)
    for order in outstanding:
        if order["status"] == "new":
            done += await desk.send(order, quote=0.0)
            continue
        execution = await broker.order(order["client_order_id"])
        if execution is None:  # Alpaca never got it: send it now
            done += await desk.send(order, quote=0.0)
        elif execution.status != "submitted":
            async with desk.db.session() as s, s.begin():
                done += await desk.record(s, order, execution, quote=execution.price or 0.0)
    held = await broker.positions()
    account = await broker.account()
    async with desk.db.session() as s, s.begin():
        mine = {p["symbol"]: p for p in await repo.positions_of(s, account_id=account_id)}
        for symbol in set(mine) - set(held):
            await repo.delete_position(s, account_id=account_id, symbol=symbol)
        for symbol, p in held.items():
            entry = mine[symbol]["entry_commission"] if symbol in mine else 0.0
            await repo.put_position(
                s,
                account_id=account_id,
                symbol=symbol,
                quantity=p.quantity,
                average_price=p.average_price,
                entry_commission=entry,
                last_price=p.last_price,
            )
        await repo.update_account(s, id=account_id, cash=account.cash)
    return done


async def run_live(
    desk: OrderDesk,
    peers: Peers,
    dep: dict[str, Any],
    cfg: Config,
    sig: Signals,
    broker: AlpacaBroker,
    until: date,
    counts: dict[str, int],
) -> tuple[date | None, date | None, int]:
    """Trade the latest closed session of a deployment on Alpaca; return (first, last,
    sessions) processed."""
    days = [t.date() for t in sig.timestamps]
    clock = await broker.clock()
    closed = last_closed_day(clock)
    if until < closed or not days:
        raise ReplayNotSupportedError(
            f"An alpaca account trades live: it trades only the latest closed session "
            f"(up to {closed} by Alpaca's clock at {clock.timestamp.isoformat()}), and "
            f"until={until} ends before it. Replay past sessions on a paper account "
            "(broker `paper`)."
        )
    latest = days[-1]
    last: date | None = dep["last_session"]
    todo = [d for d in days if last is None or d > last]
    if not todo:
        return None, None, 0
    account_id = dep["account_id"]
    counts["fills"] += await sync_book(desk, account_id, broker)
    i = len(days) - 1
    closes = {sym: (await peers.prices(sym, latest, latest)).close[latest] for sym in cfg.symbols}
    async with desk.db.session() as s:
        _, book = await desk.book_of(s, account_id)
    wishes = {x.symbol.upper(): x.wishes[i] for x in sig.series}
    pending = decide(wishes, book) if i >= cfg.warmup_period else {}
    if pending:
        nxt = clock.timestamp.date() if clock.is_open else clock.next_open.date()
        await desk.decide_orders(dep, cfg, nxt, pending, closes, counts)
        async with desk.db.session() as s:
            stored = await repo.orders_of_session(s, deployment_id=dep["id"], day=nxt)
        for order in stored:
            if order["status"] == "new":
                counts["fills"] += await desk.send(order, quote=closes[order["symbol"]])
    account = await broker.account()
    async with desk.db.session() as s, s.begin():
        await repo.put_equity_rows(
            s, account_id=account_id, rows=[(latest, account.equity, account.cash)]
        )
        await repo.mark_positions(s, account_id=account_id, prices=closes)
        await repo.update_deployment(s, id=dep["id"], last_session=latest, pending={})
    return todo[0], todo[-1], len(todo)
