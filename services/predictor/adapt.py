"""The ensemble adapts to realised outcomes: member weights, and the automatic online update.

Whenever outcomes arrive (:func:`on_outcomes`: run by the service's outcome watcher every
`outcomes_check_s` seconds, and by `POST /update_online`), the active version's logged
predictions are labelled by the bars that followed them. Of those realised on bars AFTER the
version's training range (out of sample), the newest `weights_window` set the member weights:
the seed's softmax over each member's Sharpe ratio of trading its own calls (a member flagged
degenerate keeps weight 0). Weights move only with at least `weights_min_outcomes` realised
out-of-sample outcomes, and only when outcomes newer than the last reweighting arrived; each
change is kept in the version's `weights_history` (`GET /weights`).

Once `online_update_after` (100, the seed's trigger) new outcomes are realised, the online
update starts by itself as a job (`online_auto`), the same job as `POST /update_online`: it
keeps the candidate only if it is not more than 5% worse on the newest held-out outcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np

from services.predictor import jobs
from services.predictor import repository as repo
from services.predictor.evaluation import Realised, TrainingRange, clean_json, realise
from services.predictor.ml.ensemble import AdaptiveEnsemble
from services.predictor.ml.metrics import calls, sharpe_of_calls
from services.predictor.performance import distinct_predictions
from services.predictor.schemas import UpdateOnlineRequest, UpdateOnlineResult
from services.predictor.service import PredictorService
from services.predictor.timestamps import from_ns, to_ns, version_range
from shared.jobs import JobRunner
from shared.tables import utcnow

log = logging.getLogger(__name__)

HISTORY_KEPT = 200  # weight changes kept per version


@dataclass(frozen=True)
class Reweight:
    """What one look at the realised outcomes did to the weights."""

    changed: bool
    reason: str
    outcomes: int
    entry: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


def reweight(
    state: Mapping[str, Any],
    realised: Realised,
    trained: TrainingRange,
    *,
    horizon: int,
    min_outcomes: int,
    window: int,
    after_ns: int | None,
) -> Reweight:
    """Return the weights from the members' Sharpe ratios on realised out-of-sample outcomes.

    state is the version's ensemble state; after_ns the last outcome bar of the previous
    reweighting (None: never). Pure: the caller stores what it returns.
    """
    ensemble = AdaptiveEnsemble.from_dict(state)
    members = ensemble.members
    keep = [
        i
        for i, it in enumerate(realised.items)
        if not trained.contains(it.time_ns) and all(m in it.members for m in members)
    ][-window:]
    n = len(keep)
    if n < min_outcomes:
        return Reweight(
            False,
            f"{n} realised out-of-sample outcome(s) with every member's call; the weights "
            f"move from {min_outcomes} on.",
            n,
        )
    last = realised.items[keep[-1]].time_ns
    if after_ns is not None and last <= after_ns:
        return Reweight(False, f"No outcome newer than {from_ns(after_ns).date()}.", n)
    returns = realised.returns[keep]
    sharpes: dict[str, float] = {}
    trades: dict[str, int] = {}
    for m in members:
        p = np.asarray([realised.items[i].members[m] for i in keep], dtype=np.float64)
        called = calls(p)
        sharpes[m] = sharpe_of_calls(called, returns, horizon)
        trades[m] = int(np.sum(called != 1))
    before = dict(ensemble.weights)
    weights = ensemble.update_weights(sharpes)
    entry = {
        "at": utcnow().isoformat(),
        "outcomes": n,
        "first_bar": from_ns(realised.items[keep[0]].time_ns).isoformat(),
        "last_bar": from_ns(last).isoformat(),
        "sharpes": sharpes,
        "trades": trades,
        "before": before,
        "weights": weights,
    }
    text = ", ".join(f"{m} {weights[m]:.3f} (Sharpe {sharpes[m]:.2f})" for m in members)
    return Reweight(
        True,
        f"Reweighted from {n} realised out-of-sample outcomes: {text}.",
        n,
        clean_json(entry),
        clean_json(ensemble.to_dict()),
    )


async def _realised(service: PredictorService, model: str, row: repo.VersionRow) -> Realised:
    """Return the realised logged predictions of one version (oldest bar first)."""
    config = row.hyperparameters.get("config", {})
    horizon = int(config.get("horizon", 1))
    async with service.db.session() as session:
        logged = await repo.recent_predictions(
            session,
            model_name=model,
            versions=[row.version],
            limit=service.settings.online_buffer_size * 20,
        )
    distinct = distinct_predictions(logged)
    closes = await service.performance.closes(distinct, horizon, int(config.get("vol_window", 21)))
    return await asyncio.to_thread(
        realise,
        distinct,
        closes,
        horizon=horizon,
        band=float(config.get("band", 0.5)),
        vol_window=int(config.get("vol_window", 21)),
    )


async def refresh_weights(service: PredictorService, model: str) -> Reweight:
    """Reweight the active version's members from its realised out-of-sample outcomes."""
    await service.log.flush()
    version = await service.registry.active_version(model)
    row = await service.registry.row(model, version, field="model")
    tm = row.training_metrics
    state = tm.get("ensemble") or {}
    if not state.get("members"):
        return Reweight(False, "The version stores no ensemble state.", 0)
    history: Sequence[Mapping[str, Any]] = tm.get("weights_history") or []
    after = history[-1].get("last_bar") if history else None
    realised = await _realised(service, model, row)
    out = reweight(
        state,
        realised,
        version_range(row),
        horizon=int(row.hyperparameters.get("config", {}).get("horizon", 1)),
        min_outcomes=service.settings.weights_min_outcomes,
        window=service.settings.weights_window,
        after_ns=_ns(after),
    )
    if out.changed and out.entry is not None and out.state is not None:
        metrics = {
            **tm,
            "ensemble": out.state,
            "weights_history": [*history, out.entry][-HISTORY_KEPT:],
        }
        await service.registry.set_training_metrics(model, version, clean_json(metrics))
        service.forget_facts(model, version)
    return out


def _ns(text: Any) -> int | None:
    return to_ns(datetime.fromisoformat(str(text))) if text else None


@dataclass(frozen=True)
class Check:
    """One look at the outcomes: the reweighting and what became of the online update."""

    model: str
    at: str
    weights: str
    update: str
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready fields."""
        return {
            "model": self.model,
            "at": self.at,
            "weights": self.weights,
            "update": self.update,
            "job_id": self.job_id,
        }


async def on_outcomes(service: PredictorService, runner: JobRunner | None, model: str) -> Check:
    """Reweight from realised outcomes, and start the online update when it is due."""
    weights = await refresh_weights(service, model)
    update = "automatic online updates are off (PREDICTOR_ONLINE_AUTO=false)"
    job_id: str | None = None
    if runner is not None and service.settings.online_auto:
        running = service.auto_jobs.get(model)
        if running is not None and (await runner.get(running)).status in ("queued", "running"):
            update = f"an automatic online update is running (job {running})"
            job_id = str(running)
        else:
            body = UpdateOnlineRequest(model=model)
            plan = await jobs.plan_update(service, body)
            if isinstance(plan, UpdateOnlineResult):
                update = f"not due: {plan.reason}"
            else:
                job = await runner.submit(
                    "update_online", body, partial(jobs.run_update, service, plan)
                )
                service.auto_jobs[model] = job.id
                job_id = str(job.id)
                update = (
                    f"started automatic online update job {job.id}: {plan.samples.new} new "
                    f"realised outcomes (the trigger is {plan.samples.needed})"
                )
    check = Check(model, utcnow().isoformat(), weights.reason, update, job_id)
    service.checks[model] = check.to_dict()
    return check


async def watch_outcomes(service: PredictorService, runner: JobRunner, every_s: float) -> None:
    """Look at every active model's outcomes every `every_s` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        try:
            async with service.db.session() as session:
                models = await repo.active_models(session)
            for model in models:
                await on_outcomes(service, runner, model)
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher must outlive a failed look (market down, ...)
            log.exception("outcome watcher: a look at the realised outcomes failed")
