"""The platform's own table (jobs, used by every service) and the column helpers every
service's tables are declared with.

Each service declares its tables in `services/<name>/tables.py` on its own metadata, with
the Alembic chain that builds them (shared.migrate.Schema); the platform's chain is
`shared/migrations/versions`. Prices and other measures are double precision (IEEE
binary64): a vendor's values, which carry up to 12 significant decimals, are stored
unchanged; the seed's DECIMAL(12,4) would round them.
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
    Index,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.migrate import ENVIRONMENT_DIR, Schema

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def timestamp_field(nullable: bool = False) -> Any:
    """Return a timezone-aware timestamp column's field."""
    return Field(sa_column=Column(DateTime(timezone=True), nullable=nullable))


def created_field() -> Any:
    """Return a `created_at` field: set by the application, and by the database by default."""
    return Field(
        default_factory=utcnow,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=text("CURRENT_TIMESTAMP")
        ),
    )


def double_field(nullable: bool = False) -> Any:
    """Return a double-precision (binary64) column's field."""
    return Field(default=None, sa_column=Column(Float(precision=53), nullable=nullable))


class PlatformTable(SQLModel, registry=registry()):
    """Base of the platform's tables: their own metadata, as each service's tables have."""


class Job(PlatformTable, table=True):
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
    progress_total: float | None = double_field(nullable=True)
    progress_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    request: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    result: Any = Field(default=None, sa_column=Column(JSONType, nullable=True))
    result_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    owner_host: str = Field(sa_column=Column(String(255), nullable=False))
    owner_pid: int = Field(sa_column=Column(BigInteger, nullable=False))
    owner_instance: str = Field(sa_column=Column(String(32), nullable=False))
    heartbeat_at: datetime = timestamp_field()
    created_at: datetime = created_field()
    started_at: datetime | None = timestamp_field(nullable=True)
    finished_at: datetime | None = timestamp_field(nullable=True)
    updated_at: datetime = timestamp_field()


PLATFORM = Schema("platform", PlatformTable.metadata, ENVIRONMENT_DIR / "versions")
