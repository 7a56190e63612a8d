"""The only code that touches SQL for the portfolio service (the caller owns the transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.portfolio.tables import accounts, deployments, equity, fills, orders, positions

Row = dict[str, Any]


async def insert_account(
    session: AsyncSession, *, id: uuid.UUID, name: str, broker: str, initial_cash: float
) -> None:
    """Insert a new account holding only cash."""
    await session.execute(
        accounts.insert().values(
            id=id,
            name=name,
            broker=broker,
            initial_cash=initial_cash,
            cash=initial_cash,
            realised_pnl=0.0,
            halted=False,
            halt_reason=None,
        )
    )


async def account(session: AsyncSession, *, id: uuid.UUID, lock: bool = False) -> Row | None:
    """Return one account row (locked for update when asked), or None."""
    q = select(accounts).where(accounts.c.id == id)
    if lock:
        q = q.with_for_update()
    row = (await session.execute(q)).mappings().first()
    return dict(row) if row else None


async def update_account(session: AsyncSession, *, id: uuid.UUID, **values: Any) -> None:
    """Set columns of one account."""
    await session.execute(update(accounts).where(accounts.c.id == id).values(**values))


async def positions_of(session: AsyncSession, *, account_id: uuid.UUID) -> list[Row]:
    """Return an account's positions, by symbol."""
    q = select(positions).where(positions.c.account_id == account_id).order_by(positions.c.symbol)
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def put_position(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    symbol: str,
    quantity: float,
    average_price: float,
    entry_commission: float,
    last_price: float,
) -> None:
    """Insert or replace one position."""
    await delete_position(session, account_id=account_id, symbol=symbol)
    await session.execute(
        positions.insert().values(
            account_id=account_id,
            symbol=symbol,
            quantity=quantity,
            average_price=average_price,
            entry_commission=entry_commission,
            last_price=last_price,
        )
    )


async def delete_position(session: AsyncSession, *, account_id: uuid.UUID, symbol: str) -> None:
    """Remove one position."""
    await session.execute(
        positions.delete().where(
            (positions.c.account_id == account_id) & (positions.c.symbol == symbol)
        )
    )


async def mark_positions(
    session: AsyncSession, *, account_id: uuid.UUID, prices: dict[str, float]
) -> None:
    """Set the positions' last prices."""
    for symbol, price in prices.items():
        await session.execute(
            update(positions)
            .where((positions.c.account_id == account_id) & (positions.c.symbol == symbol))
            .values(last_price=price)
        )


async def insert_deployment(
    session: AsyncSession, *, id: uuid.UUID, account_id: uuid.UUID, config: dict[str, Any]
) -> None:
    """Insert an active deployment with nothing processed."""
    await session.execute(
        deployments.insert().values(
            id=id, account_id=account_id, config=config, status="active", pending={}
        )
    )


async def deployment(session: AsyncSession, *, id: uuid.UUID) -> Row | None:
    """Return one deployment row, or None."""
    row = (
        (await session.execute(select(deployments).where(deployments.c.id == id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def deployments_of(session: AsyncSession, *, account_id: uuid.UUID) -> list[Row]:
    """Return an account's deployments."""
    q = select(deployments).where(deployments.c.account_id == account_id)
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def active_deployments(session: AsyncSession) -> list[Row]:
    """Return every active deployment."""
    q = select(deployments).where(deployments.c.status == "active").order_by(deployments.c.id)
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def update_deployment(session: AsyncSession, *, id: uuid.UUID, **values: Any) -> None:
    """Set columns of one deployment."""
    await session.execute(update(deployments).where(deployments.c.id == id).values(**values))


async def insert_order(db: AsyncSession, /, **values: Any) -> None:
    """Insert one order (its columns as keywords: `session` is the order's date)."""
    await db.execute(orders.insert().values(**values))


async def orders_of_session(
    session: AsyncSession, *, deployment_id: uuid.UUID, day: date
) -> list[Row]:
    """Return a deployment's orders of one session, in decision order."""
    q = (
        select(orders)
        .where((orders.c.deployment_id == deployment_id) & (orders.c.session == day))
        .order_by(orders.c.id)
    )
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def open_orders(session: AsyncSession) -> list[Row]:
    """Return every order decided but not yet sent to its broker (status new)."""
    q = select(orders).where(orders.c.status == "new").order_by(orders.c.id)
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def unsettled_orders(session: AsyncSession, *, account_id: uuid.UUID) -> list[Row]:
    """Return an account's orders not sent yet (new) or sent but not filled (submitted)."""
    q = (
        select(orders)
        .where((orders.c.account_id == account_id) & orders.c.status.in_(("new", "submitted")))
        .order_by(orders.c.id)
    )
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def accounts_of_broker(session: AsyncSession, *, broker: str) -> list[uuid.UUID]:
    """Return the ids of the accounts on one broker."""
    q = select(accounts.c.id).where(accounts.c.broker == broker).order_by(accounts.c.id)
    return list((await session.execute(q)).scalars())


async def count_orders(session: AsyncSession, *, account_id: uuid.UUID, day: date) -> int:
    """Return the orders an account sent (not refused) in one session."""
    q = select(func.count()).where(
        (orders.c.account_id == account_id)
        & (orders.c.session == day)
        & (orders.c.status != "refused")
    )
    return int((await session.execute(q)).scalar_one())


async def update_order(session: AsyncSession, *, id: int, **values: Any) -> None:
    """Set columns of one order."""
    await session.execute(update(orders).where(orders.c.id == id).values(**values))


async def insert_fill(session: AsyncSession, **values: Any) -> None:
    """Insert one fill."""
    await session.execute(fills.insert().values(**values))


async def page(
    session: AsyncSession, *, table: str, account_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[Row], int]:
    """Return a page of an account's orders or fills, oldest first, and the total."""
    t = orders if table == "orders" else fills
    where = t.c.account_id == account_id
    total = int((await session.execute(select(func.count()).where(where))).scalar_one())
    q = select(t).where(where).order_by(t.c.id).limit(limit).offset(offset)
    return [dict(r) for r in (await session.execute(q)).mappings()], total


async def deployment_fills(session: AsyncSession, *, deployment_id: uuid.UUID) -> list[Row]:
    """Return a deployment's fills, oldest first."""
    q = (
        select(fills)
        .join(orders, orders.c.id == fills.c.order_id)
        .where(orders.c.deployment_id == deployment_id)
        .order_by(fills.c.id)
    )
    return [dict(r) for r in (await session.execute(q)).mappings()]


async def put_equity_rows(
    session: AsyncSession, *, account_id: uuid.UUID, rows: list[tuple[date, float, float]]
) -> None:
    """Record an account's (session, equity, cash) at closes, replacing those recorded before."""
    if not rows:
        return
    await session.execute(
        equity.delete().where(
            (equity.c.account_id == account_id)
            & (equity.c.session >= rows[0][0])
            & (equity.c.session <= rows[-1][0])
        )
    )
    await session.execute(
        equity.insert(),
        [{"account_id": account_id, "session": d, "equity": e, "cash": c} for d, e, c in rows],
    )


async def equity_history(session: AsyncSession, *, account_id: uuid.UUID) -> list[Row]:
    """Return an account's equity by session, oldest first."""
    q = select(equity).where(equity.c.account_id == account_id).order_by(equity.c.session)
    return [dict(r) for r in (await session.execute(q)).mappings()]


def as_utc(day: date) -> datetime:
    """Return midnight UTC of a session date (a fill's timestamp)."""
    from datetime import UTC, time

    return datetime.combine(day, time(0), tzinfo=UTC)


def aware(t: datetime) -> datetime:
    """Return t as UTC-aware (SQLite hands timestamps back naive, in UTC)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
