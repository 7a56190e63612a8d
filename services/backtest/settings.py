"""Settings of the backtest service (shared base: `shared.config.BaseServiceSettings`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr

from shared.config import BaseServiceSettings
from shared.peers import peer_timeout, peer_token, peer_url


class BacktestSettings(BaseServiceSettings):
    """Settings of the backtest service.

    The `*_sync_*` limits decide when a request is answered directly (200) and when it runs
    as a job (202): the rule is stated in each route's description.
    """

    unknown_prefixes: ClassVar[tuple[str, ...]] = ("BACKTEST_",)

    market_url: str | None = peer_url("market", "backtest", "the bars every run trades on")
    market_token: SecretStr | None = peer_token("market", "backtest")
    market_timeout_s: float = peer_timeout("market", "backtest", default=60.0)
    predictor_url: str | None = peer_url(
        "predictor", "backtest", "the `ml_ensemble` strategy's signals"
    )
    predictor_token: SecretStr | None = peer_token("predictor", "backtest")
    predictor_timeout_s: float = peer_timeout("predictor", "backtest", default=60.0)
    predictor_train_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=AliasChoices(
            "BACKTEST_PREDICTOR_TRAIN_TIMEOUT_S", "predictor_train_timeout_s"
        ),
        description="Seconds a walk-forward waits for one window's training job.",
    )
    backtest_sync_max_symbols: int = Field(
        default=5,
        ge=1,
        description="`POST /backtest` with more instruments than this runs as a job.",
    )
    backtest_sync_max_trial_bars: int = Field(
        default=20_000_000,
        ge=0,
        description="Optimisation and walk-forward run as a job above this many trial-bars "
        "(backtests x bars each).",
    )
    backtest_sync_max_mc_steps: int = Field(
        default=20_000_000,
        ge=0,
        description="Monte Carlo runs as a job above n_runs x (bars + trades) path steps.",
    )
    backtest_direct_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a directly answered optimisation, walk-forward or Monte Carlo "
        "may run; past it the work is stopped and the answer is a 503 `direct_timeout`.",
    )
    backtest_max_trial_bars: int = Field(
        default=60_000_000,
        ge=1,
        description="Most trial-bars one optimisation keeps (per-trial returns for DSR and "
        "PBO are held in memory: 8 bytes each).",
    )
    backtest_bars_ttl_s: int = Field(
        default=300, ge=0, description="Seconds loaded bars stay in the in-process cache."
    )
    backtest_bars_cache_size: int = Field(
        default=64, ge=1, description="Bar windows kept in the in-process cache."
    )
    backtest_result_ttl_s: int = Field(
        default=86_400, ge=1, description="Seconds a stored run's answer and chart stay cached."
    )
