"""A model version's live record: its logged calls, realised against the market's closes,
beside the naive baselines and its in-sample range (`GET /performance`); the online
updates read the same closes (:mod:`.adapt`, :mod:`.jobs`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.predictor import repository as repo
from services.predictor.evaluation import (
    IN_SAMPLE_WARNING,
    Logged,
    live_figures,
    percentile,
    probs_tuple,
    realise,
)
from services.predictor.market import MarketFeatures
from services.predictor.prediction_log import PredictionLog
from services.predictor.registry import Registry
from services.predictor.schemas import Latency, PerformanceResult
from services.predictor.settings import PredictorSettings
from services.predictor.timestamps import (
    calendar_days_for,
    from_ns,
    from_ns_or_none,
    to_ns,
    version_range,
)
from shared.db import Database
from shared.errors import AppError


@dataclass(frozen=True, kw_only=True)
class LivePerformance:
    """The live record of the versions' logged predictions."""

    db: Database
    registry: Registry
    market: MarketFeatures
    log: PredictionLog
    settings: PredictorSettings

    async def report(
        self, model: str, *, version: str | None, symbol: str | None, window: int
    ) -> PerformanceResult:
        """Evaluate a version's logged, realised predictions beside the naive baselines."""
        await self.log.flush()
        version = version or await self.registry.active_version(model)
        row = await self.registry.row(model, version, kept=False)
        config = row.hyperparameters.get("config", {})
        horizon = int(config.get("horizon", 1))
        symbol = symbol.strip().upper() if symbol else None
        async with self.db.session() as session:
            logged = await repo.recent_predictions(
                session, model_name=model, versions=[version], symbol=symbol, limit=window
            )
        latencies = [float(p.details["latency_ms"]) for p in logged if "latency_ms" in p.details]
        distinct = distinct_predictions(logged)
        closes = await self.closes(distinct, horizon, int(config.get("vol_window", 21)))
        realised = await asyncio.to_thread(
            realise,
            distinct,
            closes,
            horizon=horizon,
            band=float(config.get("band", 0.5)),
            vol_window=int(config.get("vol_window", 21)),
        )
        info = row.training_metrics.get("info", {})
        majority = int(info.get("majority_class", 1))
        trained = version_range(row)
        figures = live_figures(
            realised,
            horizon=horizon,
            majority=majority,
            frequencies=info.get("class_frequencies"),
            trained=trained,
            min_calls=self.settings.verdict_min_calls,
        )
        times = [it.time_ns for it in distinct]
        return PerformanceResult(
            model=model,
            version=version,
            symbol=symbol,
            horizon=horizon,
            calls=len(logged),
            predictions=len(distinct),
            realised=int(realised.labels.size),
            out_of_sample=figures.out_of_sample,
            pending=realised.pending,
            first_bar=from_ns(min(times)) if times else None,
            last_bar=from_ns(max(times)) if times else None,
            in_sample_first=from_ns_or_none(trained.first_ns),
            in_sample_last=from_ns_or_none(trained.last_ns),
            ensemble=figures.ensemble,
            members=figures.members,
            baselines=figures.baselines,
            climatology=figures.climatology,
            baseline_test=figures.test,
            beats_baselines=figures.beats,
            verdict=figures.verdict,
            in_sample=figures.in_sample,
            in_sample_warning=IN_SAMPLE_WARNING if figures.in_sample is not None else None,
            latency=Latency(
                calls=len(latencies),
                p50_ms=percentile(latencies, 50),
                p99_ms=percentile(latencies, 99),
            ),
        )

    async def closes(
        self, logged: list[Logged], horizon: int, vol_window: int
    ) -> dict[str, tuple[Any, Any]]:
        """Return per symbol the closes around its logged predictions (unknown: skipped)."""
        by_symbol: dict[str, list[int]] = {}
        for item in logged:
            by_symbol.setdefault(item.symbol, []).append(item.time_ns)
        today = datetime.now(UTC).date()

        async def one(sym: str, times: list[int]) -> tuple[str, Any]:
            first, last = from_ns(min(times)).date(), from_ns(max(times)).date()
            start = first - timedelta(days=calendar_days_for(vol_window + horizon + 5))
            end = min(today, last + timedelta(days=calendar_days_for(horizon + 2)))
            try:
                return sym, await self.market.closes(sym, start, end)
            except AppError:
                return sym, None  # the market cannot say (yet): counted as pending

        pairs = await asyncio.gather(*(one(s, t) for s, t in by_symbol.items()))
        return {sym: bars for sym, bars in pairs if bars is not None}


def distinct_predictions(logged: list[repo.PredictionRow]) -> list[Logged]:
    """Return one prediction per (symbol, bar): the latest logged, oldest bar first."""
    seen: dict[tuple[str, int], Logged] = {}
    for p in logged:  # newest logged first
        key = (p.symbol, to_ns(p.timestamp))
        if key in seen or "probabilities" not in p.details:
            continue
        members = {name: probs_tuple(probs) for name, probs in p.details.get("members", {}).items()}
        seen[key] = Logged(p.symbol, key[1], probs_tuple(p.details["probabilities"]), members)
    return sorted(seen.values(), key=lambda it: (it.time_ns, it.symbol))
