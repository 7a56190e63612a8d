"""The portfolio service's own tables (SQLAlchemy Core on their own metadata).

Migrations: services/portfolio/migrations/versions (its own chain, shared.migrate).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from shared.migrate import Schema
from shared.tables import JSONType

metadata = MetaData()
F = Float(precision=53)
NOW = text("CURRENT_TIMESTAMP")

accounts = Table(
    "portfolio_accounts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("broker", String(20), nullable=False),
    Column("initial_cash", F, nullable=False),
    Column("cash", F, nullable=False),
    Column("realised_pnl", F, nullable=False),
    Column("halted", Boolean, nullable=False),
    Column("halt_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

positions = Table(
    "portfolio_positions",
    metadata,
    Column("account_id", Uuid, ForeignKey("portfolio_accounts.id"), primary_key=True),
    Column("symbol", String(20), primary_key=True),
    Column("quantity", F, nullable=False),
    Column("average_price", F, nullable=False),
    Column("entry_commission", F, nullable=False),
    Column("last_price", F, nullable=False),
)

deployments = Table(
    "portfolio_deployments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("portfolio_accounts.id"), nullable=False),
    Column("config", JSONType, nullable=False),
    Column("status", String(20), nullable=False),
    Column("halt_reason", Text, nullable=True),
    Column("last_session", Date, nullable=True),
    Column("pending", JSONType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

orders = Table(
    "portfolio_orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Uuid, ForeignKey("portfolio_accounts.id"), nullable=False),
    Column("deployment_id", Uuid, nullable=True),
    Column("client_order_id", String(64), nullable=False),
    Column("session", Date, nullable=False),
    Column("symbol", String(20), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", F, nullable=False),
    Column("requested", F, nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    UniqueConstraint("client_order_id", name="uq_portfolio_orders_client_order_id"),
    Index("idx_portfolio_orders_account", "account_id", "session"),
)

fills = Table(
    "portfolio_fills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Uuid, ForeignKey("portfolio_accounts.id"), nullable=False),
    Column("order_id", Integer, ForeignKey("portfolio_orders.id"), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("symbol", String(20), nullable=False),
    Column("direction", String(4), nullable=False),
    Column("shares", F, nullable=False),
    Column("price", F, nullable=False),
    Column("commission", F, nullable=False),
    Column("slippage_cost", F, nullable=False),
    Column("pnl", F, nullable=True),
    UniqueConstraint("order_id", name="uq_portfolio_fills_order"),
    Index("idx_portfolio_fills_account", "account_id", "id"),
)

equity = Table(
    "portfolio_equity",
    metadata,
    Column("account_id", Uuid, ForeignKey("portfolio_accounts.id"), primary_key=True),
    Column("session", Date, primary_key=True),
    Column("equity", F, nullable=False),
    Column("cash", F, nullable=False),
)

SCHEMA = Schema("portfolio", metadata, Path(__file__).resolve().parent / "migrations" / "versions")
