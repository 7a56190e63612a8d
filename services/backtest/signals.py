"""The predictor's calls as a backtest's signals, over its HTTP contract.

The backtest service never imports predictor code: `POST /predict_range` gives a model
version's call on every bar of a range (made from data up to that bar's close), with each
bar's realised outcome and the hit rates of the calls and of the naive baselines;
`POST /train` (a job, followed at `GET /jobs/{id}`) trains a new version on given dates,
which is how a walk-forward window fits the ensemble on its in-sample bars only.

Predictor problems become problems that name this service's fields (`strategy.params.model`,
`start_date`, ...). A call becomes a target position: `up` long, `down` short when
`allow_short` (else flat), `neutral` or a call below `min_confidence` flat or unchanged per
`on_uncertain`; bars without a call (too early for the model's feature window) change
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from services.backtest.strategies import MlEnsembleParams, MlTraining
from shared.errors import (
    AppError,
    NotFoundError,
    Problem,
    ServiceUnavailableError,
    UpstreamUnavailableError,
    ValidationProblemError,
)
from shared.http import ServiceClient, UpstreamProblemError
from shared.jobs import JobProgress, follow_job

CODES = {"down": -1, "neutral": 0, "up": 1}
PARAMS = "strategy.params"


class ModelNotFoundError(NotFoundError):
    """The predictor has no such model or version."""

    code = "model_not_found"


class _Series(BaseModel):
    """The part of a predictor `/predict_range` answer a backtest reads."""

    model_config = ConfigDict(extra="ignore")

    symbol: str
    model: str
    version: str
    horizon: int
    timestamps: list[datetime]
    direction: list[str]
    confidence: list[float]
    weights: dict[str, float]
    skipped: int
    outcome: list[str | None]
    realised: int
    hit_rate: dict[str, float | None]
    in_sample: list[bool] = []
    baseline_calls: dict[str, list[str]] = {}
    beats_baselines: bool
    verdict: str


class _Trained(BaseModel):
    """The part of a predictor training result a walk-forward reads."""

    model_config = ConfigDict(extra="ignore")

    model: str
    version: str
    training_seconds: float
    beats_baselines: bool
    verdict: str


class _VersionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    start_date: date | None = None
    end_date: date | None = None


class _Info(BaseModel):
    """The part of a predictor `/model_info` answer a backtest reads."""

    model_config = ConfigDict(extra="ignore")

    versions: list[_VersionInfo]


@dataclass(frozen=True)
class Calls:
    """One model version's calls on a range of one symbol's bars."""

    symbol: str
    model: str
    version: str
    horizon: int
    days: np.ndarray  # datetime64[D], the bars called at (UTC dates)
    direction: np.ndarray  # int8: -1 down, 0 neutral, +1 up
    confidence: np.ndarray  # probability of the called class
    outcome: np.ndarray  # float: -1, 0, +1 realised; NaN not known yet
    realised: int
    hit_rate: dict[str, float | None]  # model, majority, previous
    weights: dict[str, float]
    skipped: int
    beats_baselines: bool
    verdict: str
    # per bar: the naive baselines' calls (int8 codes) and whether the bar is in sample
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    in_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def digest(self) -> str:
        """Return a SHA-256 naming exactly these calls."""
        h = hashlib.sha256(f"{self.symbol}|{self.model}|{self.version}|".encode())
        for a in (self.days.astype(np.int64), self.direction, self.confidence):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class TrainedVersion:
    """A version a walk-forward window trained."""

    model: str
    version: str
    seconds: float
    beats_baselines: bool
    verdict: str


def to_calls(series: _Series) -> Calls:
    """Return a parsed `/predict_range` answer as arrays."""
    days = np.array(
        [np.datetime64(_utc_naive(t), "D") for t in series.timestamps], dtype="datetime64[D]"
    )
    outcome = np.array(
        [np.nan if o is None else CODES[o] for o in series.outcome], dtype=np.float64
    )
    return Calls(
        symbol=series.symbol,
        model=series.model,
        version=series.version,
        horizon=series.horizon,
        days=days,
        direction=np.array([CODES[d] for d in series.direction], dtype=np.int8),
        confidence=np.asarray(series.confidence, dtype=np.float64),
        outcome=outcome,
        realised=series.realised,
        hit_rate=dict(series.hit_rate),
        weights=dict(series.weights),
        skipped=series.skipped,
        beats_baselines=series.beats_baselines,
        verdict=series.verdict,
        baselines={
            k: np.array([CODES[d] for d in v], dtype=np.int8)
            for k, v in series.baseline_calls.items()
        },
        in_sample=np.asarray(series.in_sample or [False] * len(series.timestamps), dtype=bool),
    )


def _utc_naive(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t
    offset = t.utcoffset()
    return t.replace(tzinfo=None) - offset if offset else t.replace(tzinfo=None)


def targets_from_calls(calls: Calls, index: np.ndarray, params: MlEnsembleParams) -> np.ndarray:
    """Return the target column of `calls` on bars dated `index` (NaN: no change)."""
    bar_days = np.asarray(index).astype("datetime64[D]")
    out = np.full(bar_days.size, np.nan)
    if calls.days.size == 0 or bar_days.size == 0:
        return out
    pos = np.searchsorted(bar_days, calls.days)
    ok = pos < bar_days.size
    ok[ok] = bar_days[pos[ok]] == calls.days[ok]
    uncertain = np.nan if params.on_uncertain == "hold" else 0.0
    value = np.where(
        calls.direction > 0,
        1.0,
        np.where(calls.direction < 0, -1.0 if params.allow_short else 0.0, uncertain),
    )
    value = np.where(calls.confidence < params.min_confidence, uncertain, value)
    out[pos[ok]] = value[ok]
    return out


# Predictor field names -> this service's request fields.
_FIELDS = {
    "model": f"{PARAMS}.model",
    "version": f"{PARAMS}.version",
    "start": "start_date",
    "end": "end_date",
    "start_date": "start_date",
    "end_date": "end_date",
    "symbols": "symbol",
    "symbols[0]": "symbol",
}


def translate(
    problem: Problem, what: str, fields: dict[str, str] | None = None, *, default: str = "strategy"
) -> AppError:
    """Return the problem a predictor problem (an answer's, or a failed job's) means for a
    backtest request, naming this request's field."""
    field = {**_FIELDS, **(fields or {})}.get(problem.field or "")
    detail = f"predictor service ({what}): {problem.detail}"
    if problem.status == 404:
        return ModelNotFoundError(detail, field=field or f"{PARAMS}.model")
    if problem.code in ("cancelled", "interrupted") or problem.status in (429, 503, 504):
        return ServiceUnavailableError(detail)
    if problem.status in (400, 409, 422):
        return ValidationProblemError(detail, field=field or default)
    return UpstreamUnavailableError(
        f"predictor service ({what}) failed ({problem.status} {problem.code})."
    )


class Predictor:
    """The predictor service as a source of calls and trained versions."""

    def __init__(self, client: ServiceClient, *, train_timeout_s: float = 3600.0) -> None:
        self.client = client
        self.train_timeout_s = train_timeout_s

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def calls(
        self,
        symbol: str,
        model: str,
        version: str | None,
        start: date,
        end: date,
        *,
        fields: dict[str, str] | None = None,
    ) -> Calls:
        """Return a version's calls on `symbol`'s bars start..end (the active one if None)."""
        body: dict[str, Any] = {
            "symbol": symbol,
            "model": model,
            "start": start.isoformat(),
            "end": end.isoformat(),
        }
        if version is not None:
            body["version"] = version
        try:
            response = await self.client.request("POST", "/predict_range", json=body)
        except UpstreamProblemError as e:
            raise translate(e.problem, f"calls of {model} on {symbol}", fields) from e
        try:
            series = _Series.model_validate_json(response.content)
        except ValidationError as e:
            raise UpstreamUnavailableError(
                "The predictor service answered /predict_range with something that is not a "
                f"range of calls ({e.error_count()} errors)."
            ) from e
        return to_calls(series)

    async def training_range(self, model: str, version: str) -> tuple[date, date] | None:
        """Return the dates a version was trained on (None when the predictor does not say)."""
        try:
            response = await self.client.request("GET", "/model_info", params={"model": model})
        except UpstreamProblemError:
            return None
        try:
            info = _Info.model_validate_json(response.content)
        except ValidationError:
            return None
        for v in info.versions:
            if v.version == version and v.start_date and v.end_date:
                return v.start_date, v.end_date
        return None

    async def train(
        self,
        training: MlTraining,
        symbol: str,
        start: date,
        end: date,
        *,
        on_progress: Callable[[JobProgress], None] | None = None,
        fields: dict[str, str] | None = None,
    ) -> TrainedVersion:
        """Train a new (inactive) version of `training.model` on symbol's bars start..end."""
        body = {
            "model": training.model,
            "symbols": [symbol],
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "models": list(training.models),
            "horizon": training.horizon,
            "seed": training.seed,
            "lstm": {
                "epochs": training.epochs,
                "batch_size": training.batch_size,
                "size": training.lstm_size,
            },
            "activate": False,
        }
        what = f"training {training.model} on {symbol} {start}..{end}"
        try:
            started = await self.client.request("POST", "/train", json=body)
            status = await follow_job(
                self.client, started, on_progress=on_progress, timeout_s=self.train_timeout_s
            )
        except UpstreamProblemError as e:
            raise translate(e.problem, what, fields) from e
        if status.status != "succeeded" or status.result is None:
            if status.error is None:
                raise UpstreamUnavailableError(f"predictor service ({what}) gave no result.")
            raise translate(status.error, what, fields, default=f"{PARAMS}.training")
        trained = _Trained.model_validate(status.result)
        return TrainedVersion(
            model=trained.model,
            version=trained.version,
            seconds=trained.training_seconds,
            beats_baselines=trained.beats_baselines,
            verdict=trained.verdict,
        )
