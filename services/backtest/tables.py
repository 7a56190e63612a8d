"""The backtest service's tables: runs and their fills, stored analyses, saved strategies.

Migrations: services/backtest/migrations/versions (its own chain, shared.migrate).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.migrate import Schema
from shared.retention import RetentionRule
from shared.tables import JSONType, created_field, double_field, timestamp_field


class BacktestTable(SQLModel, registry=registry()):
    """Base of the backtest service's tables: their own metadata and Alembic chain."""


class BacktestResult(BacktestTable, table=True):
    """The summary of one backtest run."""

    __tablename__ = "backtest_results"
    __table_args__ = (
        UniqueConstraint("run_id", name="uq_backtest_results_run_id"),
        Index("idx_backtest_results_run_id", "run_id"),
        Index("idx_backtest_results_strategy", "strategy_name", text("created_at DESC")),
        Index("idx_backtest_results_symbol", "symbol", text("created_at DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    strategy_name: str = Field(sa_column=Column(String(100), nullable=False))
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    start_date: datetime = timestamp_field()
    end_date: datetime = timestamp_field()
    initial_capital: float = double_field()
    final_capital: float = double_field()
    total_return: float | None = double_field(nullable=True)
    sharpe_ratio: float | None = double_field(nullable=True)
    max_drawdown: float | None = double_field(nullable=True)
    win_rate: float | None = double_field(nullable=True)
    total_trades: int | None = None
    configuration: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = created_field()
    # revision backtest_0002: every instrument (`,AAPL,MSFT,`), the input bars' SHA-256, and the
    # run's per-bar dates, equity and benchmark as a NumPy .npy array
    symbols: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    bars_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    series: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class BacktestTrade(BacktestTable, table=True):
    """One fill of one backtest run."""

    __tablename__ = "backtest_trades"
    __table_args__ = (Index("idx_backtest_trades_run_id", "run_id", "timestamp"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("backtest_results.run_id", ondelete="CASCADE"), nullable=False
        )
    )
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = timestamp_field()
    direction: str = Field(sa_column=Column(String(10), nullable=False))
    shares: float = double_field()
    price: float = double_field()
    commission: float = double_field()
    slippage_cost: float = double_field()
    total_cost: float = double_field()
    pnl: float | None = double_field(nullable=True)
    portfolio_value: float | None = double_field(nullable=True)
    # backtest_0002: why the fill happened, and a closing fill's return on the opening equity
    reason: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    trade_return: float | None = double_field(nullable=True)


class AnalysisRun(BacktestTable, table=True):
    """One stored walk-forward or parameter search of the backtest service (backtest_0003).

    `result` is the answer as given (its equity curve at the request's `equity_points`);
    `series` a walk-forward's stitched out-of-sample dates, equity and buy-and-hold equity
    (a NumPy .npy array, as `backtest_results.series`), for its chart and Monte Carlo.
    """

    __tablename__ = "analysis_runs"
    __table_args__ = (
        CheckConstraint("kind IN ('walk_forward', 'optimization')", name="ck_analysis_runs_kind"),
        UniqueConstraint("run_id", name="uq_analysis_runs_run_id"),
        Index("idx_analysis_runs_kind", "kind", text("created_at DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    strategy_name: str = Field(sa_column=Column(String(100), nullable=False))
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    start_date: datetime = timestamp_field()
    end_date: datetime = timestamp_field()
    configuration: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    bars_hash: str = Field(sa_column=Column(String(64), nullable=False))
    result: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    series: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    initial_capital: float = double_field()
    final_capital: float | None = double_field(nullable=True)
    total_return: float | None = double_field(nullable=True)
    sharpe_ratio: float | None = double_field(nullable=True)
    max_drawdown: float | None = double_field(nullable=True)
    win_rate: float | None = double_field(nullable=True)
    total_trades: int | None = None
    created_at: datetime = created_field()


class StrategyVersion(BacktestTable, table=True):
    """One immutable version of a saved strategy written in the backtest's language."""

    __tablename__ = "strategies"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_strategies_name_version"),
        Index("idx_strategies_name", "name", "version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(63), nullable=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    rules: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    params: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    created_at: datetime = created_field()
    retired_at: datetime | None = timestamp_field(nullable=True)


SCHEMA = Schema(
    "backtest", BacktestTable.metadata, Path(__file__).resolve().parent / "migrations" / "versions"
)

RESULTS: Table = BacktestResult.__table__  # type: ignore[attr-defined]
TRADES: Table = BacktestTrade.__table__  # type: ignore[attr-defined]
ANALYSES: Table = AnalysisRun.__table__  # type: ignore[attr-defined]
# Cached answers of a pruned run expire within BACKTEST_RESULT_TTL_S.
RETENTION = (
    RetentionRule(
        "runs",
        RESULTS,
        "retention_runs_days",
        lambda t: t.c.created_at,
        dependents=(TRADES.c.run_id,),  # a run's fills go with it
    ),
    RetentionRule(  # stored walk-forwards and searches: runs too, listed beside them
        "analyses", ANALYSES, "retention_runs_days", lambda t: t.c.created_at
    ),
)
