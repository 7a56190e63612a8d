"""The prediction log writes every row in the background; a refused row blocks no other."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.predictor import repository as repo
from services.predictor.prediction_log import PredictionLog
from services.predictor.tables import SCHEMA
from shared.db import Database


def row(symbol: str, details: Any) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timestamp": datetime(2020, 3, 2, tzinfo=UTC),
        "model_name": "m",
        "model_version": "1.0.0",
        "prediction_type": "direction",
        "predicted_value": 1.0,
        "confidence": 0.5,
        "features_used": details,
        "created_at": datetime.now(UTC),
    }


def test_rows_are_written_and_a_refused_one_is_dropped_alone(tmp_path: Path) -> None:
    async def go() -> tuple[list[str], int, bool]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
        await db.migrate(SCHEMA)
        log = PredictionLog(db)
        log.start()
        try:
            log.add(row("AAPL", {"probabilities": {}}))
            log.add(row("BAD", {"not json": {1, 2}}))  # a set: the database refuses it
            log.add(row("MSFT", {"probabilities": {}}))
            flushed = await log.flush()
            async with db.session() as session:
                rows = await repo.recent_predictions(session, model_name="m", limit=10)
            return sorted(r.symbol for r in rows), log.dropped, flushed
        finally:
            await log.aclose()
            await db.dispose()

    symbols, dropped, flushed = asyncio.run(go())
    assert flushed and symbols == ["AAPL", "MSFT"] and dropped == 1


def test_rows_linger_for_a_batch_but_a_flush_writes_them_at_once(tmp_path: Path) -> None:
    async def go() -> tuple[int, bool, int]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
        await db.migrate(SCHEMA)
        log = PredictionLog(db, linger_s=3600.0)  # would outlast the test without the flush
        log.start()
        try:
            for symbol in ("AAPL", "MSFT", "NVDA"):
                log.add(row(symbol, {"probabilities": {}}))
            await asyncio.sleep(0.05)
            async with db.session() as session:
                early = len(await repo.recent_predictions(session, model_name="m", limit=10))
            flushed = await log.flush(timeout_s=30)
            async with db.session() as session:
                rows = await repo.recent_predictions(session, model_name="m", limit=10)
            return early, flushed, len(rows)
        finally:
            await log.aclose()
            await db.dispose()

    early, flushed, written = asyncio.run(go())
    assert early == 0  # still gathering: no transaction per prediction
    assert flushed and written == 3
