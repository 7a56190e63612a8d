"""The only code of the predictor that touches SQL: `model_states` and `predictions`.

Functions take keyword arguments and a session; the caller owns the transaction. A model
version is one `model_states` row: the portable bytes (`model_data`, NULL once archived),
the configuration (`hyperparameters`) and the evaluation and lineage (`training_metrics`).
Exactly one row per model name has `is_active` true.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.predictor.tables import ModelState, Prediction

STATES: Table = ModelState.__table__  # type: ignore[attr-defined]
PREDICTIONS: Table = Prediction.__table__  # type: ignore[attr-defined]
MODEL_TYPE = "ensemble"


@dataclass(frozen=True)
class VersionRow:
    """A version's metadata (without its bytes)."""

    model_name: str
    version: str
    hyperparameters: dict[str, Any]
    training_metrics: dict[str, Any]
    data_start: datetime | None
    data_end: datetime | None
    created_at: datetime
    is_active: bool
    has_data: bool


@dataclass(frozen=True)
class PredictionRow:
    """One logged prediction."""

    symbol: str
    timestamp: datetime
    model_version: str
    predicted_value: float | None
    confidence: float | None
    details: dict[str, Any]
    created_at: datetime


def _metadata_columns() -> list[Any]:
    c = STATES.c
    return [
        c.model_name,
        c.version,
        c.hyperparameters,
        c.training_metrics,
        c.trained_on_data_start,
        c.trained_on_data_end,
        c.created_at,
        c.is_active,
        c.model_data.is_not(None).label("has_data"),
    ]


def _version_row(row: Any) -> VersionRow:
    return VersionRow(
        model_name=row.model_name,
        version=row.version,
        hyperparameters=dict(row.hyperparameters or {}),
        training_metrics=dict(row.training_metrics or {}),
        data_start=row.trained_on_data_start,
        data_end=row.trained_on_data_end,
        created_at=row.created_at,
        is_active=bool(row.is_active),
        has_data=bool(row.has_data),
    )


async def versions(session: AsyncSession, *, model_name: str) -> list[VersionRow]:
    """Return every version of a model (archived ones too), newest first."""
    stmt = (
        select(*_metadata_columns())
        .where(STATES.c.model_name == model_name)
        .order_by(STATES.c.created_at.desc(), STATES.c.id.desc())
    )
    return [_version_row(row) for row in (await session.execute(stmt)).all()]


async def version(session: AsyncSession, *, model_name: str, version: str) -> VersionRow | None:
    """Return one version's metadata, or None."""
    stmt = select(*_metadata_columns()).where(
        STATES.c.model_name == model_name, STATES.c.version == version
    )
    row = (await session.execute(stmt)).first()
    return _version_row(row) if row is not None else None


async def active_version(session: AsyncSession, *, model_name: str) -> str | None:
    """Return the active version of a model, or None when it has none."""
    stmt = select(STATES.c.version).where(
        STATES.c.model_name == model_name, STATES.c.is_active.is_(True)
    )
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def active_models(session: AsyncSession) -> list[str]:
    """Return the names of the models that have an active version."""
    c = STATES.c
    stmt = select(c.model_name).where(c.is_active.is_(True)).distinct()
    return sorted(str(r[0]) for r in (await session.execute(stmt)).all())


async def model_data(session: AsyncSession, *, model_name: str, version: str) -> bytes | None:
    """Return a version's bytes (None if unknown or archived)."""
    stmt = select(STATES.c.model_data).where(
        STATES.c.model_name == model_name, STATES.c.version == version
    )
    data = (await session.execute(stmt)).scalar_one_or_none()
    return bytes(data) if data is not None else None


async def insert_version(
    session: AsyncSession,
    *,
    model_name: str,
    version: str,
    data: bytes,
    hyperparameters: dict[str, Any],
    training_metrics: dict[str, Any],
    data_start: datetime | None,
    data_end: datetime | None,
    created_at: datetime,
) -> None:
    """Insert a version, inactive (activate it with `set_active`)."""
    await session.execute(
        insert(STATES).values(
            model_name=model_name,
            version=version,
            model_type=MODEL_TYPE,
            model_data=data,
            hyperparameters=hyperparameters,
            training_metrics=training_metrics,
            trained_on_data_start=data_start,
            trained_on_data_end=data_end,
            created_at=created_at,
            is_active=False,
        )
    )


async def set_active(session: AsyncSession, *, model_name: str, version: str) -> bool:
    """Make a kept version the only active one of its model; False if it is not kept."""
    c = STATES.c
    kept = await session.execute(
        select(c.id).where(
            c.model_name == model_name, c.version == version, c.model_data.is_not(None)
        )
    )
    if kept.first() is None:
        return False
    await session.execute(
        update(STATES)
        .where(c.model_name == model_name, c.is_active.is_(True), c.version != version)
        .values(is_active=False)
    )
    await session.execute(
        update(STATES)
        .where(c.model_name == model_name, c.version == version)
        .values(is_active=True)
    )
    return True


async def archive(session: AsyncSession, *, model_name: str, keep: int) -> list[str]:
    """Delete the bytes of all but the `keep` newest versions (never the active one)."""
    c = STATES.c
    rows = (
        await session.execute(
            select(c.version, c.is_active)
            .where(c.model_name == model_name, c.model_data.is_not(None))
            .order_by(c.created_at.desc(), c.id.desc())
        )
    ).all()
    old = [r.version for r in rows[keep:] if not r.is_active]
    if old:
        await session.execute(
            update(STATES)
            .where(c.model_name == model_name, c.version.in_(old))
            .values(model_data=None)
        )
    return old


async def set_training_metrics(
    session: AsyncSession, *, model_name: str, version: str, training_metrics: dict[str, Any]
) -> None:
    """Replace a version's `training_metrics` document."""
    c = STATES.c
    await session.execute(
        update(STATES)
        .where(c.model_name == model_name, c.version == version)
        .values(training_metrics=training_metrics)
    )


async def insert_predictions(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Insert logged predictions (dicts of `predictions` columns)."""
    if rows:
        await session.execute(insert(PREDICTIONS), list(rows))


async def recent_predictions(
    session: AsyncSession,
    *,
    model_name: str,
    versions: Sequence[str] | None = None,
    symbol: str | None = None,
    limit: int,
) -> list[PredictionRow]:
    """Return a model's logged predictions, newest logged first, at most limit."""
    c = PREDICTIONS.c
    where = [c.model_name == model_name]
    if versions is not None:
        where.append(c.model_version.in_(list(versions)))
    if symbol is not None:
        where.append(c.symbol == symbol)
    stmt = (
        select(
            c.symbol,
            c.timestamp,
            c.model_version,
            c.predicted_value,
            c.confidence,
            c.features_used,
            c.created_at,
        )
        .where(and_(*where))
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(limit)
    )
    return [
        PredictionRow(
            symbol=r.symbol,
            timestamp=r.timestamp,
            model_version=r.model_version,
            predicted_value=r.predicted_value,
            confidence=r.confidence,
            details=dict(r.features_used or {}),
            created_at=r.created_at,
        )
        for r in (await session.execute(stmt)).all()
    ]


async def prediction_count(session: AsyncSession, *, model_name: str) -> int:
    """Return how many predictions of a model were logged."""
    c = PREDICTIONS.c
    stmt = select(func.count()).select_from(PREDICTIONS).where(c.model_name == model_name)
    return int((await session.execute(stmt)).scalar_one())
