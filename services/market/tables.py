"""The market service's tables: daily bars, fetch coverage and stored indicator values.

Migrations: services/market/migrations/versions (its own chain, shared.migrate).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.migrate import Schema
from shared.tables import JSONType, created_field, double_field, timestamp_field


class MarketTable(SQLModel, registry=registry()):
    """Base of the market service's tables: their own metadata and Alembic chain."""


class MarketBar(MarketTable, table=True):
    """One daily OHLCV bar of one symbol, exactly as the vendor published it."""

    __tablename__ = "market_data"
    __table_args__ = (
        UniqueConstraint("symbol", "timestamp", name="uq_market_data_symbol_timestamp"),
        Index("idx_market_data_symbol_timestamp", "symbol", text("timestamp DESC")),
        Index("idx_market_data_timestamp", text("timestamp DESC")),
    )

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = timestamp_field()
    open: float = double_field()
    high: float = double_field()
    low: float = double_field()
    close: float = double_field()
    volume: int = Field(sa_column=Column(BigInteger, nullable=False))
    adjusted_close: float | None = double_field(nullable=True)
    source: str | None = Field(default=None, sa_column=Column(String(20), nullable=True))
    created_at: datetime = created_field()


class MarketDataCoverage(MarketTable, table=True):
    """A date range already asked of the providers for a symbol, so it is never asked again."""

    __tablename__ = "market_data_coverage"
    __table_args__ = (Index("idx_coverage_symbol", "symbol", "start_date"),)

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    start_date: datetime = timestamp_field()
    end_date: datetime = timestamp_field()
    source: str = Field(sa_column=Column(String(20), nullable=False))
    rows: int = Field(default=0)
    created_at: datetime = created_field()


class TechnicalIndicator(MarketTable, table=True):
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
    timestamp: datetime = timestamp_field()
    indicator_name: str = Field(sa_column=Column(String(50), nullable=False))
    indicator_value: float | None = double_field(nullable=True)
    parameters: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = created_field()


SCHEMA = Schema(
    "market", MarketTable.metadata, Path(__file__).resolve().parent / "migrations" / "versions"
)
