"""HTTP routes of the predictor service: parse, call one service function, return a schema."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.predictor import adapt, jobs
from services.predictor.schemas import (
    MODEL_PATTERN,
    SYMBOL_RULE,
    VERSION_PATTERN,
    ModelInfo,
    PerformanceResult,
    Prediction,
    PredictionSeries,
    PredictRangeRequest,
    PredictRequest,
    RollbackRequest,
    RollbackResult,
    TrainRequest,
    UpdateOnlineRequest,
    UpdateOnlineResult,
    Weights,
)
from services.predictor.service import PredictorService
from shared.api import ProblemDocs
from shared.jobs import JOBS, JobRunner, JobStatus, accepted, accepted_responses
from shared.memory import release_free_memory
from shared.rules import CrossFieldRule, cross_field_rules
from shared.state import Slot

router = APIRouter()

# What a failure means in this service's terms (tool descriptions are made from these).
errors = ProblemDocs(
    {
        404: "No such model (`model_not_found`: train one first), version (`version_not_found`: "
        "GET /model_info lists the kept ones) or symbol.",
        409: "The symbol has too few bars with complete features before `as_of` for this model "
        "(`insufficient_data`): a later date, or an earlier one when `as_of` is past the data.",
        422: "An input breaks a rule of the spec; `field` names it and `errors` lists every one.",
        502: "The market service failed or answered something unexpected.",
        503: "The database or the market service is unavailable.",
    }
)

ModelQuery = Annotated[
    str, Query(pattern=MODEL_PATTERN, description="Model name (default `default`).")
]


# The app's PredictorService, built in its lifespan.
PREDICTOR = Slot("predictor", PredictorService)
Service = Annotated[PredictorService, Depends(PREDICTOR)]
Jobs = Annotated[JobRunner, Depends(JOBS)]


TRAIN_DOC = """Train the LSTM-with-attention and XGBoost ensemble on daily bars; a job.

Features (50 per bar, past data only) come from the market service; labels are
`down | neutral | up` over `horizon` bars with a volatility-scaled neutral band. Rows are
split in time into train / validation / test (purged by `horizon` bars); scalers are
fitted on training rows only. Answers `202` with the job; `GET` its `Location` for
progress (per epoch and member) and, when done, the result: the new `version`, the
validation and out-of-sample (test) figures of each member and of the ensemble beside the
naive baselines (majority class, yesterday's direction), and a plain `verdict`. The new
version becomes active (unless `activate` is false); the last 5 versions are kept.
The full-size LSTM takes minutes; `lstm.size: "small"` trains in seconds. A job whose
symbols have too few bars fails with `insufficient_data`, an unknown symbol with
`symbol_not_found` (naming `symbols[i]`).
"""
DATE_ORDER = CrossFieldRule(
    ("end_date", "start_date"), "`end_date` is after `start_date` when both are given"
)


@router.post(
    "/train",
    operation_id="train_models",
    status_code=202,
    response_model=JobStatus,
    responses={**accepted_responses(), **errors(401, 422, 503)},
    summary="Train a new version of a model (a job)",
    **cross_field_rules(TRAIN_DOC, DATE_ORDER),
)
async def train_models(
    body: TrainRequest, request: Request, service: Service, runner: Jobs
) -> JSONResponse:
    """Train a new version of a model on daily bars (a job)."""
    job = await runner.submit("train", body, partial(jobs.train, service, body))
    return accepted(request, job)


@router.post(
    "/predict",
    operation_id="predict",
    response_model=Prediction,
    responses=errors(401, 404, 409, 422, 502, 503),
    summary="Predict a symbol's direction",
)
async def predict(body: PredictRequest, service: Service) -> Prediction:
    """Return the active model version's call for a symbol over its horizon.

    `direction` is `down`, `neutral` or `up` with class `probabilities` and `confidence`;
    `members` shows what the LSTM and XGBoost each said and their ensemble weights. Made at
    the last bar on or before `as_of` (default: the latest bar). `baseline_test` is the
    version's three-way verdict on its test segment (`beats | does_not_beat |
    insufficient_evidence`, exact McNemar counts and p-values against the majority class and
    yesterday's direction, at least 100 calls); `verdict` says it in words: unless it is
    `beats`, the calls are no better than naive. `in_sample` and `notes` say when `as_of`
    lies inside the version's training range or the symbol was not trained on. Cached 30 s
    per symbol, model and version; every call is logged for `/performance`.
    """
    return await service.predict(body)


RANGE_ORDER = CrossFieldRule(("end", "start"), "`end` is on or after `start` when given")


@router.post(
    "/predict_range",
    operation_id="predict_range",
    response_model=PredictionSeries,
    responses=errors(401, 404, 422, 502, 503),
    summary="A model version's calls on every bar of a range",
    **cross_field_rules(
        """Return one model version's call on every bar from `start` to `end`, columnar.

        Made for backtests and walk-forwards: pin a `version` (default: the active one) and
        get `direction`, `confidence` and class `probabilities` per bar, each from the
        features up to that bar only. Bars without a complete feature window are `skipped`.
        These calls are neither cached nor logged (they are not live predictions; use
        `/predict` for those). Each bar's realised `outcome`, the baselines' calls
        (`baseline_calls`) and whether it is `in_sample` (inside the version's training
        range) come with it; `hit_rate` and `range_test` (the exact McNemar three-way
        verdict, at least 100 calls) use the realised out-of-sample bars only.
        """,
        RANGE_ORDER,
    ),
)
async def predict_range(
    body: PredictRangeRequest, service: Service, background: BackgroundTasks
) -> PredictionSeries:
    """Return a model version's calls on every bar of a range."""
    # twenty years of windows, probabilities and their JSON are garbage once the answer is
    # sent: give the pages back to the OS then (glibc keeps them otherwise)
    background.add_task(release_free_memory)
    return await service.predict_range(body)


@router.get(
    "/performance",
    operation_id="get_performance",
    response_model=PerformanceResult,
    responses=errors(401, 404, 422, 502, 503),
    summary="Live performance of a model version",
)
async def get_performance(
    service: Service,
    model: ModelQuery = "default",
    version: Annotated[
        str | None,
        Query(pattern=VERSION_PATTERN, description="Version (default: the active one)."),
    ] = None,
    symbol: Annotated[
        Annotated[str, SYMBOL_RULE] | None,
        Query(max_length=20, description="Only this symbol's calls."),
    ] = None,
    window: Annotated[
        int, Query(ge=1, le=20_000, description="The most recent logged calls to look at.")
    ] = 1000,
) -> PerformanceResult:
    """Return how a version's logged predictions did once their outcome was known.

    Over the most recent `window` logged calls (one per symbol and bar is evaluated):
    accuracy, macro precision, recall and F1, expected calibration error, Brier score and the
    Sharpe ratio of trading the calls, for the ensemble and each member, beside the same
    figures for the baselines (majority class, yesterday's direction) and the climatology
    forecast, and the server-side latency p50/p99 of `/predict`. Only calls on bars after
    the version's training range count (`out_of_sample`); those inside it are reported
    apart under `in_sample` with a warning. `baseline_test` is the three-way verdict
    (`beats | does_not_beat | insufficient_evidence` below 100 calls) by the exact McNemar
    test against each baseline, with the counts. Calls whose horizon has not passed are
    `pending`.
    """
    return await service.performance.report(model, version=version, symbol=symbol, window=window)


@router.get(
    "/model_info",
    operation_id="get_model_info",
    response_model=ModelInfo,
    responses=errors(401, 404, 422, 503),
    summary="A model's active version and kept versions",
)
async def get_model_info(service: Service, model: ModelQuery = "default") -> ModelInfo:
    """Return a model's `active_version` and its kept `versions`, newest first.

    Each version has its training data (symbols, dates), hyperparameters, validation and
    out-of-sample figures beside the baselines, ensemble weights, lineage (trained or an
    online update of a parent) and a plain `verdict`.
    """
    return await service.model_info(model)


@router.get(
    "/weights",
    operation_id="get_weights",
    response_model=Weights,
    responses=errors(401, 404, 422, 503),
    summary="Ensemble weights of the active version",
)
async def get_weights(service: Service, model: ModelQuery = "default") -> Weights:
    """Return the active version's member weights, how they were set and their history.

    Equal after training (a member calling one class on every validation bar: 0, reason
    `degenerate`). Whenever outcomes arrive (the service looks every few minutes, and at each
    `POST /update_online`) they become a softmax over each member's Sharpe ratio of trading
    its own calls on the newest `window` realised out-of-sample outcomes (`sharpes`), once at
    least `min_outcomes` are realised; `history` lists every change.
    """
    return await service.weights(model)


@router.post(
    "/rollback",
    operation_id="rollback_model",
    response_model=RollbackResult,
    responses=errors(401, 404, 422, 503),
    summary="Make an older version active again",
)
async def rollback_model(body: RollbackRequest, service: Service) -> RollbackResult:
    """Activate a kept older `version` of a model.

    Its predictions are then exactly (bit for bit) what that version gave before, and
    nothing cached from the newer version is served (the cache is keyed by version).
    """
    return await service.rollback(body)


@router.post(
    "/update_online",
    operation_id="update_online",
    response_model=UpdateOnlineResult,
    responses={
        **accepted_responses(),
        **errors(401, 404, 422, 502, 503),
    },
    summary="Learn from realised outcomes (an online update)",
)
async def update_online(
    body: UpdateOnlineRequest, request: Request, service: Service, runner: Jobs
) -> UpdateOnlineResult | JSONResponse:
    """Fold the realised outcomes of logged predictions into the active version.

    The buffer holds the newest 1,000 realised outcomes; an update runs once 100 are new
    (or with `force`) - and starts by itself as a job then (see `adaptation` in
    `GET /model_info`). The members are reweighted from the realised out-of-sample outcomes
    first (`GET /weights`). Answers `200` with `status: not_due` and the counts when it is not
    due; else `202` with a job that fine-tunes each member on the buffer plus a sample of
    the training history, sets the ensemble weights from the members' recent Sharpe ratios,
    and judges candidate and active model on the newest held-out outcomes: the candidate
    becomes a new version (a patch bump) only if not more than 5% worse, else it is
    discarded and `reason` says why with the figures.
    """
    await adapt.refresh_weights(service, body.model)
    plan = await jobs.plan_update(service, body)
    if isinstance(plan, UpdateOnlineResult):
        return plan
    job = await runner.submit("update_online", body, partial(jobs.run_update, service, plan))
    return accepted(request, job)
