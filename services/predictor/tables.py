"""The predictor service's tables: versioned models and logged predictions.

Migrations: services/predictor/migrations/versions (its own chain, shared.migrate).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.migrate import Schema
from shared.retention import RetentionRule
from shared.tables import JSONType, created_field, double_field, timestamp_field


class PredictorTable(SQLModel, registry=registry()):
    """Base of the predictor service's tables: their own metadata and Alembic chain."""


class ModelState(PredictorTable, table=True):
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
    trained_on_data_start: datetime | None = timestamp_field(nullable=True)
    trained_on_data_end: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = created_field()
    is_active: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})


class Prediction(PredictorTable, table=True):
    """One model output for one symbol and time."""

    __tablename__ = "predictions"
    __table_args__ = (Index("idx_predictions_symbol_timestamp", "symbol", text("timestamp DESC")),)

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = timestamp_field()
    model_name: str = Field(sa_column=Column(String(50), nullable=False))
    model_version: str = Field(sa_column=Column(String(20), nullable=False))
    prediction_type: str = Field(sa_column=Column(String(20), nullable=False))
    predicted_value: float | None = double_field(nullable=True)
    confidence: float | None = double_field(nullable=True)
    features_used: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = created_field()


SCHEMA = Schema(
    "predictor",
    PredictorTable.metadata,
    Path(__file__).resolve().parent / "migrations" / "versions",
)

PREDICTIONS: Table = Prediction.__table__  # type: ignore[attr-defined]
RETENTION = (
    RetentionRule(
        "predictions", PREDICTIONS, "retention_predictions_days", lambda t: t.c.created_at
    ),
)
