"""Long work of the predictor as jobs: training a version, and an online update.

The work runs on the event loop and only awaits: features come from the market service over
HTTP, the training itself is one task in a worker process (`where="process"`: TensorFlow
holds the GIL), and the new version goes to the registry. Progress is the ML core's own
(per LSTM epoch, per ten trees, per member) through `task_report`; a cancelled job's task
sees `task_cancelled()` and stops at its next batch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np

from services.predictor import repository as repo
from services.predictor import tasks
from services.predictor.errors import InsufficientDataError
from services.predictor.evaluation import clean_json, evaluation, realise, verdict
from services.predictor.market import FeatureFrame
from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.training import TrainConfig
from services.predictor.ml.xgboost_model import XGBoostConfig
from services.predictor.performance import distinct_predictions
from services.predictor.registry import unpack
from services.predictor.schemas import (
    Figures,
    LSTMOptions,
    TrainRequest,
    TrainResult,
    UpdateOnlineRequest,
    UpdateOnlineResult,
    UpdateSamples,
)
from services.predictor.service import PredictorService
from services.predictor.timestamps import calendar_days_for, from_ns, to_ns
from shared.jobs import JobContext
from shared.tables import utcnow

log = logging.getLogger(__name__)

SMALL_LSTM = LSTMConfig(
    seq_len=20,
    lstm_units=(16, 16, 8),
    attention_heads=2,
    key_dim=8,
    dense_units=(16, 8),
)
MIN_TRAIN_BARS = 120  # usable bars (after the LSTM window) below which training is refused
MIN_UPDATE_OUTCOMES = 20  # realised outcomes an update needs to train and validate at all
VALIDATION_SHARE = 0.2  # newest share of the buffer held out to judge an update


def lstm_config(options: LSTMOptions) -> LSTMConfig:
    """Return the LSTM configuration of a request (the seed's network, or the small one)."""
    base = LSTMConfig() if options.size == "seed" else SMALL_LSTM
    return replace(
        base, epochs=options.epochs, batch_size=options.batch_size, patience=options.patience
    )


def train_config(body: TrainRequest, *, band: float, vol_window: int) -> TrainConfig:
    """Return the ML core's configuration of a training request."""
    return TrainConfig(
        models=tuple(body.models),
        horizon=body.horizon,
        band=band,
        vol_window=vol_window,
        seed=body.seed,
        lstm=lstm_config(body.lstm),
        xgboost=XGBoostConfig(),
    )


def _series(frames: list[FeatureFrame], names: list[str]) -> list[tasks.SeriesTuple]:
    return [(f.symbol, f.select(names), f.close, f.times) for f in frames]


# ---- training ------------------------------------------------------------------------------


async def train(service: PredictorService, body: TrainRequest, ctx: JobContext) -> TrainResult:
    """Train a new version of body.model on the symbols' features; store and activate it."""
    settings = service.settings
    config = train_config(body, band=settings.label_band, vol_window=settings.label_vol_window)
    ctx.report(0, None, f"loading features of {', '.join(body.symbols)}")
    ends = [body.end_date] * len(body.symbols)
    if body.end_date is None:
        ends = list(
            await asyncio.gather(
                *(
                    service.market.last_bar(s, symbol_field=f"symbols[{i}]")
                    for i, s in enumerate(body.symbols)
                )
            )
        )
    end = max(d for d in ends if d is not None)
    start = body.start_date or end - timedelta(days=round(5 * 365.25))
    if start >= end:
        raise InsufficientDataError(
            f"start_date {start} is not before end_date {end}.", field="start_date"
        )
    frames = list(
        await asyncio.gather(
            *(
                service.market.features(s, start, end, symbol_field=f"symbols[{i}]")
                for i, s in enumerate(body.symbols)
            )
        )
    )
    names = frames[0].names
    for i, frame in enumerate(frames):
        usable = int(np.isfinite(frame.matrix).all(axis=1).sum()) - config.context
        if usable < MIN_TRAIN_BARS:
            raise InsufficientDataError(
                f"{frame.symbol} has {frame.bars} bars between {start} and {end}, "
                f"{max(usable, 0)} usable after the {config.context}-bar window: training "
                f"needs at least {MIN_TRAIN_BARS}. Widen the dates.",
                field="start_date" if len(frames) == 1 else f"symbols[{i}]",
            )
    try:
        out = await ctx.run(
            tasks.train_task, _series(frames, names), names, config.to_dict(), where="process"
        )
    except ValueError as e:  # the ML core refuses data it cannot split or train on
        raise InsufficientDataError(f"Cannot train on these bars: {e}", field="start_date") from e
    first = min(int(f.times[0]) for f in frames)
    last = max(int(f.times[-1]) for f in frames)
    metrics = clean_json(
        {
            "kind": "trained",
            "parent": None,
            "validation": out["metrics"].get("validation"),
            "test": out["metrics"].get("test"),
            "info": out["info"],
            "ensemble": out["ensemble"],
            "training_seconds": out["seconds"],
            "online": {"updates": 0, "watermark": from_ns(last).isoformat()},
        }
    )
    hyperparameters = clean_json(
        {
            "config": config.to_dict(),
            "feature_names": names,
            "symbols": body.symbols,
            "request": body.model_dump(mode="json"),
        }
    )
    added = await service.registry.add(
        body.model,
        artifacts=out["artifacts"],
        hyperparameters=hyperparameters,
        training_metrics=metrics,
        data_start=from_ns(first),
        data_end=from_ns(last),
        kind="trained",
        activate=body.activate,
    )
    min_calls = settings.verdict_min_calls
    judged = verdict(metrics, min_calls)
    lstm_info = out["info"].get("lstm", {})
    return TrainResult(
        model=body.model,
        version=added.version,
        previous_version=added.previous_active,
        active=added.active,
        symbols=body.symbols,
        start_date=from_ns(first).date(),
        end_date=from_ns(last).date(),
        models=list(config.models),
        horizon=config.horizon,
        seed=config.seed,
        rows={k: int(v) for k, v in out["info"].get("rows", {}).items()},
        epochs_run=lstm_info.get("epochs_run"),
        validation=evaluation(metrics["validation"], min_calls),
        test=evaluation(metrics["test"], min_calls),
        baseline_test=judged.test,
        beats_baselines=judged.beats,
        verdict=judged.sentence,
        degenerate=dict(out["info"].get("degenerate") or {}),
        weights={k: float(v) for k, v in out["ensemble"].get("weights", {}).items()},
        weight_reasons=dict(out["ensemble"].get("reasons") or {}),
        training_seconds=round(float(out["seconds"]), 3),
    )


# ---- online updates ------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePlan:
    """An online update that is due: what to fine-tune on and validate with."""

    body: UpdateOnlineRequest
    version: str
    row: repo.VersionRow
    recent: dict[str, list[int]]  # symbol -> bar times (ns) of older buffered outcomes
    validation: dict[str, list[int]]  # symbol -> bar times of the newest outcomes
    samples: UpdateSamples
    last_ns: int


def _watermark(row: repo.VersionRow) -> int:
    """Return the bar time (ns) after which outcomes are new to this version."""
    online = row.training_metrics.get("online", {})
    stamp = online.get("watermark")
    if stamp:
        return to_ns(datetime.fromisoformat(stamp))
    return to_ns(row.data_end) if row.data_end is not None else 0


async def plan_update(
    service: PredictorService, body: UpdateOnlineRequest
) -> UpdatePlan | UpdateOnlineResult:
    """Gather the buffer of realised outcomes; answer `not_due`, or plan the update."""
    settings = service.settings
    await service.log.flush()
    version = await service.registry.active_version(body.model)
    row = await service.registry.row(body.model, version, field="model")
    config = row.hyperparameters.get("config", {})
    horizon = int(config.get("horizon", 1))
    async with service.db.session() as session:
        logged = await repo.recent_predictions(
            session, model_name=body.model, limit=settings.online_buffer_size * 20
        )
    distinct = distinct_predictions(logged)
    closes = await service.performance.closes(distinct, horizon, int(config.get("vol_window", 21)))
    realised = realise(
        distinct,
        closes,
        horizon=horizon,
        band=float(config.get("band", 0.5)),
        vol_window=int(config.get("vol_window", 21)),
    )
    buffer = realised.items[-settings.online_buffer_size :]  # oldest bar first
    mark = _watermark(row)
    new = sum(1 for it in buffer if it.time_ns > mark)
    samples = UpdateSamples(buffer=len(buffer), new=new, needed=settings.online_update_after)

    def not_due(reason: str) -> UpdateOnlineResult:
        return UpdateOnlineResult(
            model=body.model,
            status="not_due",
            reason=reason,
            active_version=version,
            new_version=None,
            samples=samples,
        )

    if new < settings.online_update_after and not body.force:
        return not_due(
            f"{new} new realised outcome(s) since {from_ns(mark).date()} (of {len(buffer)} "
            f"in the buffer); an update waits for {settings.online_update_after}. Pass "
            "force=true to update anyway."
        )
    if len(buffer) < MIN_UPDATE_OUTCOMES:
        return not_due(
            f"Only {len(buffer)} realised outcome(s) of logged predictions: an update needs "
            f"at least {MIN_UPDATE_OUTCOMES} to fine-tune on and to validate with."
        )
    n_val = max(5, round(len(buffer) * VALIDATION_SHARE))
    recent: dict[str, list[int]] = {}
    validation: dict[str, list[int]] = {}
    for i, item in enumerate(buffer):
        target = validation if i >= len(buffer) - n_val else recent
        target.setdefault(item.symbol, []).append(item.time_ns)
    return UpdatePlan(
        body=body,
        version=version,
        row=row,
        recent=recent,
        validation=validation,
        samples=samples,
        last_ns=buffer[-1].time_ns,
    )


def _history(frame: FeatureFrame, row: repo.VersionRow, count: int, seed: int) -> list[int]:
    """Return up to count bar times of the version's training range, a seeded sample."""
    if count <= 0 or row.data_start is None or row.data_end is None:
        return []
    lo, hi = to_ns(row.data_start), to_ns(row.data_end)
    pool = frame.times[(frame.times >= lo) & (frame.times <= hi)]
    if pool.size == 0:
        return []
    rng = np.random.default_rng(seed)
    take = rng.choice(pool.size, size=min(count, pool.size), replace=False)
    return [int(t) for t in np.sort(pool[take])]


async def run_update(
    service: PredictorService, plan: UpdatePlan, ctx: JobContext
) -> UpdateOnlineResult:
    """Fine-tune the active version on the buffer plus history; keep it only if it holds."""
    body, row = plan.body, plan.row
    hp, tm = row.hyperparameters, row.training_metrics
    config = hp.get("config", {})
    names = list(hp["feature_names"])
    horizon = int(config.get("horizon", 1))
    ctx.report(0, None, "loading features")
    symbols = sorted(set(plan.recent) | set(plan.validation) | set(hp.get("symbols", [])))
    all_times = [t for d in (plan.recent, plan.validation) for ts in d.values() for t in ts]
    first = min([*all_times, *([to_ns(row.data_start)] if row.data_start else [])])
    models = config.get("models", [])
    context = int(config.get("lstm", {}).get("seq_len", 1)) if "lstm" in models else 1
    start = from_ns(first).date() - timedelta(days=calendar_days_for(context + 5))
    after = from_ns(plan.last_ns).date() + timedelta(days=calendar_days_for(horizon + 2))
    end = min(datetime.now(UTC).date(), after)
    frames = list(await asyncio.gather(*(service.market.features(s, start, end) for s in symbols)))
    recent_count = sum(len(v) for v in plan.recent.values())
    per_symbol = max(1, recent_count // max(1, len(hp.get("symbols", [])) or 1))
    seed = int(config.get("seed", 42)) + int(tm.get("online", {}).get("updates", 0))
    history = {
        f.symbol: _history(f, row, per_symbol, seed)
        for f in frames
        if f.symbol in hp.get("symbols", [])
    }
    async with service.db.session() as session:
        blob = await repo.model_data(session, model_name=body.model, version=plan.version)
    if blob is None:
        raise InsufficientDataError(f"Version {plan.version} is no longer kept.", field="model")
    options = {
        "epochs": body.epochs,
        "trees": body.trees,
        "tolerance": service.settings.online_tolerance,
        "metric": body.metric,
    }
    try:
        out = await ctx.run(
            tasks.update_task,
            unpack(blob),
            _series(frames, names),
            plan.recent,
            history,
            plan.validation,
            options,
            where="process",
        )
    except ValueError as e:
        raise InsufficientDataError(f"Cannot update on these outcomes: {e}", field="model") from e
    samples = plan.samples.model_copy(
        update={"train": out["train_rows"], "validation": out["validation_rows"]}
    )
    attempt = {
        "at": utcnow().isoformat(),
        "accepted": bool(out["accepted"]),
        "reason": out["reason"],
        "outcomes": samples.buffer,
    }
    watermark = from_ns(plan.last_ns).isoformat()
    new_version = None
    if out["accepted"]:
        metrics = clean_json(
            {
                **tm,
                "kind": "online_update",
                "parent": plan.version,
                "info": out["info"],
                "online_validation": out["metrics"].get("online"),
                "ensemble": out["ensemble"],
                "online": {
                    "updates": int(tm.get("online", {}).get("updates", 0)) + 1,
                    "watermark": watermark,
                    "last_attempt": attempt,
                },
            }
        )
        added = await service.registry.add(
            body.model,
            artifacts=out["artifacts"],
            hyperparameters=hp,
            training_metrics=metrics,
            data_start=row.data_start,
            data_end=from_ns(plan.last_ns),
            kind="online_update",
            base=plan.version,
        )
        new_version = added.version
    else:
        online = {**tm.get("online", {}), "watermark": watermark, "last_attempt": attempt}
        await service.registry.set_training_metrics(
            body.model, plan.version, clean_json({**tm, "online": online})
        )
    status: Literal["accepted", "discarded"] = "accepted" if out["accepted"] else "discarded"
    reason = (
        f"Kept as {new_version}: {out['reason']}."
        if new_version
        else f"Discarded, {plan.version} stays active: {out['reason']}."
    )
    return UpdateOnlineResult(
        model=body.model,
        status=status,
        reason=reason,
        active_version=new_version or plan.version,
        new_version=new_version,
        samples=samples,
        active=Figures.model_validate(out["active"]) if out["active"] else None,
        candidate=Figures.model_validate(out["candidate"]) if out["candidate"] else None,
        weights={k: float(v) for k, v in out["weights"].items()},
    )
