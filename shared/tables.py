"""SQLModel tables: the seed schema's six tables plus fetch coverage.

Prices are double precision (IEEE binary64): the vendor's values, which carry up to 12
significant decimals, are stored unchanged; the seed's DECIMAL(12,4) would round them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=nullable))


def _created() -> Any:
    return Field(
        default_factory=utcnow,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=text("CURRENT_TIMESTAMP")
        ),
    )


def _float(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(Float(precision=53), nullable=nullable))


class MarketBar(SQLModel, table=True):
    """One daily OHLCV bar of one symbol, exactly as the vendor published it."""

    __tablename__ = "market_data"
    __table_args__ = (
        UniqueConstraint("symbol", "timestamp", name="uq_market_data_symbol_timestamp"),
        Index("idx_market_data_symbol_timestamp", "symbol", text("timestamp DESC")),
        Index("idx_market_data_timestamp", text("timestamp DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = _ts()
    open: float = _float()
    high: float = _float()
    low: float = _float()
    close: float = _float()
    volume: int = Field(sa_column=Column(BigInteger, nullable=False))
    adjusted_close: float | None = _float(nullable=True)
    source: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    created_at: datetime = _created()


class MarketDataCoverage(SQLModel, table=True):
    """A date range already asked of the providers for a symbol, so it is never asked again."""

    __tablename__ = "market_data_coverage"
    __table_args__ = (Index("idx_coverage_symbol", "symbol", "start_date"),)

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    start_date: datetime = _ts()
    end_date: datetime = _ts()
    source: str = Field(sa_column=Column(String(20), nullable=False))
    rows: int = Field(default=0)
    created_at: datetime = _created()


class TechnicalIndicator(SQLModel, table=True):
    """One pre-calculated indicator value."""

    __tablename__ = "technical_indicators"
    __table_args__ = (
        UniqueConstraint(
            "symbol", "timestamp", "indicator_name", "parameters", name="uq_indicator_value"
        ),
        Index("idx_indicators_symbol_timestamp", "symbol", text("timestamp DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = _ts()
    indicator_name: str = Field(sa_column=Column(String(50), nullable=False))
    indicator_value: float | None = _float(nullable=True)
    parameters: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = _created()


class ModelState(SQLModel, table=True):
    """A versioned, serialised model."""

    __tablename__ = "model_states"
    __table_args__ = (
        UniqueConstraint("model_name", "version", name="uq_model_states_name_version"),
        Index("idx_model_states_active", "model_name", "is_active", text("created_at DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(sa_column=Column(String(50), nullable=False))
    version: str = Field(sa_column=Column(String(20), nullable=False))
    model_type: str = Field(sa_column=Column(String(20), nullable=False))
    model_data: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    hyperparameters: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    training_metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    trained_on_data_start: datetime | None = _ts(nullable=True)
    trained_on_data_end: datetime | None = _ts(nullable=True)
    created_at: datetime = _created()
    is_active: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})


class Prediction(SQLModel, table=True):
    """One model output for one symbol and time."""

    __tablename__ = "predictions"
    __table_args__ = (Index("idx_predictions_symbol_timestamp", "symbol", text("timestamp DESC")),)

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = _ts()
    model_name: str = Field(sa_column=Column(String(50), nullable=False))
    model_version: str = Field(sa_column=Column(String(20), nullable=False))
    prediction_type: str = Field(sa_column=Column(String(20), nullable=False))
    predicted_value: float | None = _float(nullable=True)
    confidence: float | None = _float(nullable=True)
    features_used: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = _created()


class BacktestResult(SQLModel, table=True):
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
    start_date: datetime = _ts()
    end_date: datetime = _ts()
    initial_capital: float = _float()
    final_capital: float = _float()
    total_return: float | None = _float(nullable=True)
    sharpe_ratio: float | None = _float(nullable=True)
    max_drawdown: float | None = _float(nullable=True)
    win_rate: float | None = _float(nullable=True)
    total_trades: int | None = None
    configuration: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = _created()
    # migration 0003: every instrument (`,AAPL,MSFT,`), the input bars' SHA-256, and the
    # run's per-bar dates, equity and benchmark as a NumPy .npy array
    symbols: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    bars_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    series: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class BacktestTrade(SQLModel, table=True):
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
    timestamp: datetime = _ts()
    direction: str = Field(sa_column=Column(String(10), nullable=False))
    shares: float = _float()
    price: float = _float()
    commission: float = _float()
    slippage_cost: float = _float()
    total_cost: float = _float()
    pnl: float | None = _float(nullable=True)
    portfolio_value: float | None = _float(nullable=True)
    # migration 0003: why the fill happened, and a closing fill's return on the opening equity
    reason: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    trade_return: float | None = _float(nullable=True)


class Job(SQLModel, table=True):
    """One unit of long work (a sweep, a walk-forward, a training run) of one service.

    The row is the job's truth: status, progress, outcome, and the owner (host, pid, runner
    instance) whose heartbeat says it is still alive. Every write after the start is guarded
    by status and owner, so a cancelled or interrupted job never gets a result afterwards.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_jobs_status"
        ),
        Index("idx_jobs_service_status", "service", "status"),
        Index("idx_jobs_owner_instance", "owner_instance", "status"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    kind: str = Field(sa_column=Column(String(50), nullable=False))
    service: str = Field(sa_column=Column(String(50), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    progress_done: float = Field(
        default=0.0, sa_column=Column(Float(precision=53), nullable=False, server_default="0")
    )
    progress_total: float | None = _float(nullable=True)
    progress_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    request: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    result: Any = Field(default=None, sa_column=Column(JSONType, nullable=True))
    result_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    owner_host: str = Field(sa_column=Column(String(255), nullable=False))
    owner_pid: int = Field(sa_column=Column(BigInteger, nullable=False))
    owner_instance: str = Field(sa_column=Column(String(32), nullable=False))
    heartbeat_at: datetime = _ts()
    created_at: datetime = _created()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


class AnalysisRun(SQLModel, table=True):
    """One stored walk-forward or parameter search of the backtest service (migration 0004).

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
    start_date: datetime = _ts()
    end_date: datetime = _ts()
    configuration: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    bars_hash: str = Field(sa_column=Column(String(64), nullable=False))
    result: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    series: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    initial_capital: float = _float()
    final_capital: float | None = _float(nullable=True)
    total_return: float | None = _float(nullable=True)
    sharpe_ratio: float | None = _float(nullable=True)
    max_drawdown: float | None = _float(nullable=True)
    win_rate: float | None = _float(nullable=True)
    total_trades: int | None = None
    created_at: datetime = _created()


class StrategyVersion(SQLModel, table=True):
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
    created_at: datetime = _created()
    retired_at: datetime | None = _ts(nullable=True)
