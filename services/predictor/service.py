"""Predictor domain logic: predictions, the registry's views, rollback; live performance is
:mod:`services.predictor.performance` (held as `PredictorService.performance`).

Never imports FastAPI: a CLI, a job or a test can call it directly. Training and online
updates (jobs) live in :mod:`services.predictor.jobs`.

Redis keys (under the configured prefix): `model:active:{model}` (the active version, no
TTL; see :mod:`services.predictor.registry`) and
`prediction:{symbol}:{model}:{version}:{as_of|latest}:v<schema version>` (30 s): the cache
is keyed by version, so after a rollback nothing cached from the newer version is served.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import numpy as np

from services.predictor import repository as repo
from services.predictor.errors import (
    FeatureMismatchError,
    InsufficientDataError,
    VersionNotFoundError,
)
from services.predictor.evaluation import (
    TrainingRange,
    VersionVerdict,
    direction_value,
    evaluation,
    range_outcomes,
    verdict,
)
from services.predictor.feature_blocks import FeatureBlocks
from services.predictor.market import MarketFeatures
from services.predictor.ml.ensemble import AdaptiveEnsemble, EnsembleOutput
from services.predictor.ml.training import EnsembleModel
from services.predictor.ml.types import CLASSES
from services.predictor.performance import LivePerformance
from services.predictor.prediction_log import PredictionLog
from services.predictor.registry import Registry
from services.predictor.schemas import (
    Adaptation,
    Direction,
    ModelInfo,
    OnlineState,
    Prediction,
    PredictionSeries,
    PredictRangeRequest,
    PredictRequest,
    RollbackRequest,
    RollbackResult,
    VersionInfo,
    WeightChange,
    Weights,
)
from services.predictor.settings import PredictorSettings
from services.predictor.timestamps import (
    as_utc,
    calendar_days_for,
    from_ns,
    from_ns_or_none,
    to_ns,
    version_range,
)
from shared.cache import Cache, ModelCache
from shared.db import Database
from shared.tables import utcnow
from shared.verdicts import MIN_CALLS


def _midnight(day: date) -> datetime:
    """Return a date as UTC midnight."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _day(value: int | None) -> date | None:
    return from_ns(value).date() if value is not None else None


def version_info(row: repo.VersionRow, min_calls: int = MIN_CALLS) -> VersionInfo:
    """Return a version row as the public VersionInfo."""
    hp, tm = row.hyperparameters, row.training_metrics
    config = hp.get("config", {})
    judged = verdict(tm, min_calls)
    trained = version_range(row)
    info = tm.get("info", {})
    return VersionInfo(
        version=row.version,
        active=row.is_active,
        created_at=as_utc(row.created_at),
        kind=tm.get("kind", "trained"),
        parent_version=tm.get("parent"),
        models=list(config.get("models", [])),
        symbols=list(hp.get("symbols", [])),
        start_date=as_utc(row.data_start).date() if row.data_start else None,
        end_date=as_utc(row.data_end).date() if row.data_end else None,
        horizon=int(config.get("horizon", 1)),
        seed=int(config.get("seed", 0)),
        hyperparameters=config,
        rows={k: int(v) for k, v in info.get("rows", {}).items()},
        validation=evaluation(tm.get("validation"), min_calls),
        test=evaluation(tm.get("test"), min_calls),
        weights=dict(tm.get("ensemble", {}).get("weights", {})),
        weight_reasons=dict(tm.get("ensemble", {}).get("reasons", {})),
        in_sample_first=from_ns_or_none(trained.first_ns),
        in_sample_last=from_ns_or_none(trained.last_ns),
        baseline_test=judged.test,
        beats_baselines=judged.beats,
        verdict=judged.sentence,
        online=OnlineState.model_validate(tm.get("online", {})),
    )


@dataclass(frozen=True)
class VersionFacts:
    """What an answer says about a version beside its call: verdict, range, live weights."""

    verdict: VersionVerdict
    trained: TrainingRange
    ensemble: dict[str, Any]
    loaded_at: float

    def predict(self, model: EnsembleModel, features: Any, rows: Any) -> EnsembleOutput:
        """Return the model's call with the version's live weights (its stored ensemble)."""
        probs = model.member_probabilities(features, rows)
        state = self.ensemble
        if state.get("weights") and set(state["weights"]) == set(model.ensemble.members):
            return AdaptiveEnsemble.from_dict(state).combine(probs)
        return model.ensemble.combine(probs)


RANGE_CHUNK_ROWS = 512  # bars predicted per call of a range: its windows' memory is bounded
RANGE_CONCURRENCY = 2  # ranges predicted at once per process; more wait their turn


def predict_in_chunks(
    predict: Callable[[Any, Any], EnsembleOutput],
    x: np.ndarray,
    rows: np.ndarray,
    chunk: int = RANGE_CHUNK_ROWS,
) -> tuple[np.ndarray, dict[str, float]]:
    """Return predict(x, rows)'s probabilities (and weights), ``chunk`` rows a call.

    Each call builds the members' input windows of its rows only, so a range of twenty
    years never holds every window at once.
    """
    parts: list[np.ndarray] = []
    weights: dict[str, float] = {}
    for i in range(0, rows.size, chunk):
        out = predict(x, rows[i : i + chunk])
        parts.append(np.asarray(out.probabilities))
        weights = dict(out.weights)
    return np.concatenate(parts, axis=0), weights


class PredictorService:
    """Predictions of the active model versions, their registry, and their live record."""

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        registry: Registry,
        market: MarketFeatures,
        log: PredictionLog,
        settings: PredictorSettings,
    ) -> None:
        self.db = db
        self.cache = cache
        self.registry = registry
        self.market = market
        self.log = log
        self.settings = settings
        self.predictions = ModelCache(cache, Prediction)
        self.blocks = FeatureBlocks(market)
        self._facts: OrderedDict[tuple[str, str], VersionFacts] = OrderedDict()
        self.auto_jobs: dict[str, uuid.UUID] = {}  # model -> its automatic online update job
        self.checks: dict[str, dict[str, Any]] = {}  # model -> the last look at its outcomes
        self._ranges = asyncio.Semaphore(RANGE_CONCURRENCY)
        self.performance = LivePerformance(
            db=db, registry=registry, market=market, log=log, settings=settings
        )

    # ---- predict -----------------------------------------------------------------------

    async def predict(self, body: PredictRequest) -> Prediction:
        """Return the active version's call for a symbol (cached 30 s), and log it."""
        start = time.perf_counter()
        symbol = body.symbol.strip().upper()
        if body.version is not None:
            await self.registry.row(body.model, body.version)  # 404 unless kept
            answer = await self._cached_call(symbol, body.model, body.version, body.as_of)
        else:
            version = await self.registry.active_version(body.model)
            try:
                answer = await self._cached_call(symbol, body.model, version, body.as_of)
            except VersionNotFoundError:  # Redis named a version the database does not keep
                version = await self.registry.active_from_db(body.model)
                answer = await self._cached_call(symbol, body.model, version, body.as_of)
        latency_ms = (time.perf_counter() - start) * 1000.0
        self.log.add(self._log_row(answer, latency_ms, body.as_of))
        return answer

    async def _cached_call(
        self, symbol: str, name: str, version: str, as_of: date | None
    ) -> Prediction:
        """Return the cached call of this version, or compute it once for concurrent callers."""

        async def compute() -> Prediction:
            model = await self.registry.load(name, version)
            return await self._compute(symbol, name, version, model, as_of)

        key = f"prediction:{symbol}:{name}:{version}:{as_of or 'latest'}"
        answer, level = await self.predictions.get_or_compute(
            key, compute, self.settings.prediction_ttl_s
        )
        return answer.model_copy(update={"cached": True}) if level is not None else answer

    async def _compute(
        self, symbol: str, name: str, version: str, model: EnsembleModel, as_of: date | None
    ) -> Prediction:
        """Run the ensemble on the last bar up to as_of (features from the year's block)."""
        context = model.config.context
        end = as_of if as_of is not None else await self.market.last_bar(symbol)
        frame = await self.blocks.window(symbol, end, calendar_days_for(context + 5))
        try:
            x = frame.select(model.feature_names)
        except KeyError as e:
            raise FeatureMismatchError(
                f"The market service no longer serves feature {e.args[0]!r} that model "
                f"{name} {version} reads; train a new version."
            ) from e
        usable = x.shape[0] >= context and bool(np.isfinite(x[-context:]).all())
        if not usable:
            last = await self.market.last_bar(symbol) if as_of is not None else end
            fix = (
                f"choose an earlier `as_of` (the last bar of {symbol} is {last})"
                if last is not None and end > last
                else "choose a later `as_of`"
            )
            raise InsufficientDataError(
                f"{symbol} has {x.shape[0]} bar(s) of complete features in the "
                f"{calendar_days_for(context + 5)} calendar days up to {end} but the model needs "
                f"{context} (and about 600 bars of history before them for warm-up); {fix}.",
                field="as_of" if as_of is not None else "symbol",
            )
        facts = await self.facts(name, version)
        judged, trained = facts.verdict, facts.trained
        out = await asyncio.to_thread(facts.predict, model, x, None)
        row = out.row(-1)
        bar = int(frame.times[-1])
        notes = []
        known = symbol in trained.symbols
        if not known:
            notes.append(
                f"{name} {version} was not trained on {symbol} (trained on "
                f"{', '.join(trained.symbols) or 'unknown symbols'}): its test-segment verdict "
                f"is about those symbols, not this one."
            )
        inside = trained.contains(bar)
        if inside:
            notes.append(
                f"The bar {from_ns(bar).date()} lies inside the version's training range "
                f"({_day(trained.first_ns)}..{_day(trained.last_ns)}): the model has learnt "
                "from these bars, so this is an in-sample call, not a forecast."
            )
        return Prediction.model_validate(
            {
                **row,
                "symbol": symbol,
                "model": name,
                "version": version,
                "as_of": from_ns(bar),
                "horizon": model.config.horizon,
                "baseline_test": judged.test,
                "beats_baselines": judged.beats,
                "verdict": judged.sentence,
                "trained_on_symbol": known,
                "in_sample": inside,
                "notes": notes,
                "cached": False,
            }
        )

    async def predict_range(self, body: PredictRangeRequest) -> PredictionSeries:
        """Return a version's calls on every bar start..end (not cached, not logged)."""
        symbol = body.symbol.strip().upper()
        if body.version is not None:
            await self.registry.row(body.model, body.version)
            version = body.version
        else:
            version = await self.registry.active_version(body.model)
        try:
            model = await self.registry.load(body.model, version)
        except VersionNotFoundError:
            if body.version is not None:
                raise
            version = await self.registry.active_from_db(body.model)
            model = await self.registry.load(body.model, version)
        cfg = model.config
        reach = max(cfg.context, cfg.vol_window + cfg.horizon + 1)
        first = body.start - timedelta(days=calendar_days_for(reach + 5))
        frame = await self.market.features(symbol, first, body.end, date_field="start")
        try:
            x = frame.select(model.feature_names)
        except KeyError as e:
            raise FeatureMismatchError(
                f"The market service no longer serves feature {e.args[0]!r} that model "
                f"{body.model} {version} reads; train a new version."
            ) from e
        in_range = np.flatnonzero(frame.times >= to_ns(_midnight(body.start)))
        complete = np.isfinite(x).all(axis=1)
        gaps = np.concatenate([[0], np.cumsum(~complete)])
        ok = (in_range >= cfg.context - 1) & (
            gaps[in_range + 1] - gaps[np.maximum(in_range + 1 - cfg.context, 0)] == 0
        )
        rows = in_range[ok]
        facts = await self.facts(body.model, version)
        if rows.size:
            # at most RANGE_CONCURRENCY ranges at once, each in chunks: memory stays bounded
            predict = functools.partial(facts.predict, model)
            async with self._ranges:
                probs, weights = await asyncio.to_thread(predict_in_chunks, predict, x, rows)
        else:
            probs = np.empty((0, 3))
            weights = dict(facts.ensemble.get("weights") or model.ensemble.weights)
        judged, trained = facts.verdict, facts.trained
        calls = probs.argmax(axis=1) if rows.size else np.empty(0, dtype=np.int64)
        inside = trained.mask(frame.times[rows])
        ranged = range_outcomes(
            frame.close,
            rows,
            calls,
            model,
            majority=int(model.info.get("majority_class", 1)),
            inside=inside,
            min_calls=self.settings.verdict_min_calls,
        )
        return PredictionSeries(
            symbol=symbol,
            model=body.model,
            version=version,
            horizon=model.config.horizon,
            timestamps=[from_ns(int(t)) for t in frame.times[rows]],
            direction=[cast(Direction, CLASSES[int(k)]) for k in calls],
            confidence=[float(v) for v in (probs.max(axis=1) if rows.size else [])],
            probabilities={c: [float(v) for v in probs[:, j]] for j, c in enumerate(CLASSES)},
            weights={k: float(v) for k, v in weights.items()},
            skipped=int(in_range.size - rows.size),
            outcome=ranged.outcome,
            realised=int(sum(o is not None for o in ranged.outcome)),
            in_sample=[bool(v) for v in inside],
            baseline_calls=ranged.baseline_calls,
            out_of_sample_realised=ranged.test.n,
            hit_rate=ranged.hit_rate,
            in_sample_hit_rate=ranged.in_sample_hit_rate,
            range_test=ranged.test,
            range_verdict=ranged.sentence,
            baseline_test=judged.test,
            beats_baselines=judged.beats,
            verdict=judged.sentence,
        )

    async def facts(self, name: str, version: str) -> VersionFacts:
        """Return a version's verdict, training range and live ensemble weights.

        Cached per version for `prediction_ttl_s` seconds: the verdict and range never change,
        the weights change when realised outcomes reweight them (:mod:`.adapt`).
        """
        key = (name, version)
        hit = self._facts.get(key)
        if hit is None or time.monotonic() - hit.loaded_at > self.settings.prediction_ttl_s:
            row = await self.registry.row(name, version, kept=False)
            hit = VersionFacts(
                verdict=verdict(row.training_metrics, self.settings.verdict_min_calls),
                trained=version_range(row),
                ensemble=dict(row.training_metrics.get("ensemble") or {}),
                loaded_at=time.monotonic(),
            )
            self._facts[key] = hit
            self._facts.move_to_end(key)
            while len(self._facts) > 256:
                self._facts.popitem(last=False)
        return hit

    def forget_facts(self, name: str, version: str) -> None:
        """Drop a version's cached facts (its weights changed in this process)."""
        self._facts.pop((name, version), None)

    @staticmethod
    def _log_row(answer: Prediction, latency_ms: float, as_of: date | None) -> dict[str, Any]:
        """Return the `predictions` row of one answered call."""
        return {
            "symbol": answer.symbol,
            "timestamp": answer.as_of,
            "model_name": answer.model,
            "model_version": answer.version,
            "prediction_type": "direction",
            "predicted_value": direction_value(answer.direction),
            "confidence": answer.confidence,
            "features_used": {
                "probabilities": answer.probabilities.model_dump(),
                "members": {
                    name: call.probabilities.model_dump() for name, call in answer.members.items()
                },
                "weights": {name: call.weight for name, call in answer.members.items()},
                "horizon": answer.horizon,
                "latency_ms": round(latency_ms, 4),
                "cached": answer.cached,
                "requested_as_of": as_of.isoformat() if as_of else None,
            },
            "created_at": utcnow(),
        }

    # ---- registry views ----------------------------------------------------------------

    async def model_info(self, model: str) -> ModelInfo:
        """Return the active version and the kept versions of a model, newest first."""
        rows = await self.registry.rows(model)
        active = next((r.version for r in rows if r.is_active), rows[0].version)
        s = self.settings
        return ModelInfo(
            model=model,
            active_version=active,
            adaptation=Adaptation(
                automatic_update=s.online_auto and s.outcomes_check_s > 0,
                update_after=s.online_update_after,
                tolerance=s.online_tolerance,
                check_every_s=s.outcomes_check_s,
                weights_min_outcomes=s.weights_min_outcomes,
                weights_window=s.weights_window,
                last_check=self.checks.get(model),
            ),
            keep_versions=self.registry.keep,
            versions=[version_info(r, self.settings.verdict_min_calls) for r in rows if r.has_data],
            archived_versions=[r.version for r in rows if not r.has_data],
        )

    async def weights(self, model: str) -> Weights:
        """Return the active version's ensemble weights, where they came from, their history."""
        version = await self.registry.active_version(model)
        row = await self.registry.row(model, version, field="model")
        tm = row.training_metrics
        state = tm.get("ensemble", {})
        sharpes = {k: float(v) for k, v in state.get("sharpes", {}).items()}
        history = [WeightChange.model_validate(h) for h in tm.get("weights_history") or []]
        parent = tm.get("parent")
        if history:
            source = (
                "a softmax over each member's Sharpe ratio of its own calls on the newest "
                f"{history[-1].outcomes} realised out-of-sample outcomes "
                f"({history[-1].first_bar.date()}..{history[-1].last_bar.date()})"
            )
        elif sharpes:
            source = (
                "a softmax over each member's Sharpe ratio of its own calls on recent realised "
                f"outcomes (online update of {parent})"
            )
        else:
            source = "as trained (no realised out-of-sample outcomes have reweighted them yet)"
        reasons = {k: str(v) for k, v in state.get("reasons", {}).items()}
        if reasons:
            source += "; " + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
        return Weights(
            model=model,
            version=version,
            weights={k: float(v) for k, v in state.get("weights", {}).items()},
            sharpes=sharpes,
            temperature=float(state.get("temperature", 1.0)),
            source=source,
            reasons=reasons,
            min_outcomes=self.settings.weights_min_outcomes,
            window=self.settings.weights_window,
            history=history,
            last_check=self.checks.get(model),
        )

    async def rollback(self, body: RollbackRequest) -> RollbackResult:
        """Make an older kept version active again; its predictions are its own again."""
        previous = await self.registry.activate(body.model, body.version)
        row = await self.registry.row(body.model, body.version)
        judged = verdict(row.training_metrics, self.settings.verdict_min_calls)
        return RollbackResult(
            model=body.model,
            version=body.version,
            previous_version=previous,
            changed=previous != body.version,
            baseline_test=judged.test,
            beats_baselines=judged.beats,
            verdict=judged.sentence,
        )
