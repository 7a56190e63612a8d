"""Settings of the predictor service (shared base: `shared.config.BaseServiceSettings`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr

from shared.config import BaseServiceSettings
from shared.peers import peer_timeout, peer_token, peer_url


class PredictorSettings(BaseServiceSettings):
    """Settings of the predictor service.

    Training runs in job worker processes (`JOB_PROCESS_WORKERS`, default 1 here: each one
    that has trained holds TensorFlow, about 570 MB). The service process itself imports
    TensorFlow only when it first predicts with a model that has an LSTM member.
    """

    unknown_prefixes: ClassVar[tuple[str, ...]] = ("PREDICTOR_",)

    job_process_workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes for training and online updates (each TensorFlow "
        "worker is about 570 MB; more train several models at once).",
    )
    market_url: str | None = peer_url("market", "predictor", "features and bars")
    market_token: SecretStr | None = peer_token("market", "predictor")
    market_timeout_s: float = peer_timeout("market", "predictor", default=60.0)
    prediction_ttl_s: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices("PREDICTOR_PREDICTION_TTL_S", "prediction_ttl_s"),
        description="Seconds a prediction stays cached (`prediction:{symbol}:{model}:...`).",
    )
    keep_versions: int = Field(
        default=5,
        ge=1,
        le=100,
        validation_alias=AliasChoices("PREDICTOR_KEEP_VERSIONS", "keep_versions"),
        description="Versions per model whose weights are kept; older ones keep their "
        "metadata only (archived) and can no longer be rolled back to.",
    )
    label_band: float = Field(
        default=0.5,
        ge=0.0,
        le=5.0,
        validation_alias=AliasChoices("PREDICTOR_LABEL_BAND", "label_band"),
        description="Neutral band of the labels, in units of the trailing volatility times "
        "sqrt(horizon): a move inside it is `neutral`.",
    )
    label_vol_window: int = Field(
        default=21,
        ge=2,
        le=252,
        validation_alias=AliasChoices("PREDICTOR_LABEL_VOL_WINDOW", "label_vol_window"),
        description="Bars of the trailing volatility that scales the neutral band.",
    )
    online_buffer_size: int = Field(
        default=1000,
        ge=10,
        validation_alias=AliasChoices("PREDICTOR_ONLINE_BUFFER_SIZE", "online_buffer_size"),
        description="Realised outcomes an online update learns from (the newest).",
    )
    online_update_after: int = Field(
        default=100,
        ge=1,
        validation_alias=AliasChoices("PREDICTOR_ONLINE_UPDATE_AFTER", "online_update_after"),
        description="New realised outcomes needed before an online update runs.",
    )
    online_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("PREDICTOR_ONLINE_TOLERANCE", "online_tolerance"),
        description="An updated model is kept only if not more than this much worse "
        "(relative) on recent held-out outcomes.",
    )
    verdict_min_calls: int = Field(
        default=100,
        ge=1,
        le=100_000,
        validation_alias=AliasChoices("PREDICTOR_VERDICT_MIN_CALLS", "verdict_min_calls"),
        description="Realised out-of-sample calls below which a verdict against the "
        "baselines is `insufficient_evidence`.",
    )
    weights_min_outcomes: int = Field(
        default=30,
        ge=2,
        le=100_000,
        validation_alias=AliasChoices("PREDICTOR_WEIGHTS_MIN_OUTCOMES", "weights_min_outcomes"),
        description="Realised out-of-sample outcomes below which the ensemble weights are "
        "not recomputed from the members' Sharpe ratios.",
    )
    weights_window: int = Field(
        default=250,
        ge=2,
        le=100_000,
        validation_alias=AliasChoices("PREDICTOR_WEIGHTS_WINDOW", "weights_window"),
        description="The newest realised out-of-sample outcomes whose Sharpe ratios set the "
        "weights (the rolling window).",
    )
    outcomes_check_s: float = Field(
        default=300.0,
        ge=0.0,
        validation_alias=AliasChoices("PREDICTOR_OUTCOMES_CHECK_S", "outcomes_check_s"),
        description="How often the service looks at realised outcomes to reweight the "
        "members and start a due online update (0: never by itself).",
    )
    online_auto: bool = Field(
        default=True,
        validation_alias=AliasChoices("PREDICTOR_ONLINE_AUTO", "online_auto"),
        description="Run the online update as a job by itself once `online_update_after` new "
        "outcomes are realised.",
    )
    loaded_models: int = Field(
        default=4,
        ge=1,
        le=64,
        validation_alias=AliasChoices("PREDICTOR_LOADED_MODELS", "loaded_models"),
        description="Model versions held in memory for predictions (least recently used "
        "ones are unloaded).",
    )
    active_refresh_s: float = Field(
        default=2.0,
        ge=0.0,
        validation_alias=AliasChoices("PREDICTOR_ACTIVE_REFRESH_S", "active_refresh_s"),
        description="Without Redis: how long this process trusts its copy of a model's "
        "active version before asking the database again.",
    )
