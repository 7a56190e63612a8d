"""Settings of the portfolio service (shared base: `shared.config.BaseServiceSettings`).

The peer settings (`*_url`, `*_token`, `*_timeout_s`) follow the backtest's: the service kit
of issue 16 will derive them once for every service.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr

from shared.config import BaseServiceSettings


class PortfolioSettings(BaseServiceSettings):
    """Settings of the portfolio service."""

    unknown_prefixes: ClassVar[tuple[str, ...]] = ("PORTFOLIO_",)

    market_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MARKET_URL", "PORTFOLIO_MARKET_URL", "market_url"),
        description="Base URL of the market service (the paper broker's opening prices). "
        "Unset: the co-hosted market app in-process, else http://127.0.0.1:8000/market.",
    )
    market_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PORTFOLIO_MARKET_TOKEN", "market_token"),
        description="Bearer token sent to the market service (default: API_TOKEN).",
    )
    backtest_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BACKTEST_URL", "PORTFOLIO_BACKTEST_URL", "backtest_url"),
        description="Base URL of the backtest service (a deployment's signals). Unset: the "
        "co-hosted backtest app in-process, else http://127.0.0.1:8000/backtest.",
    )
    backtest_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PORTFOLIO_BACKTEST_TOKEN", "backtest_token"),
        description="Bearer token sent to the backtest service (default: API_TOKEN).",
    )
    peer_timeout_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("PORTFOLIO_PEER_TIMEOUT_S", "peer_timeout_s"),
        description="Seconds to wait for one market or backtest answer.",
    )
    portfolio_scheduler_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds between scheduler ticks: each runs every active deployment up to "
        "the latest closed session (the market's exchange calendar). 0: off.",
    )
    portfolio_run_job_sessions: int = Field(
        default=600,
        ge=0,
        description="`POST /deployments/{id}/run` answers 202 and runs as a job when it has more "
        "weekdays to process than this (600: a little over two years, a few seconds of replay "
        "with trades); 0: always a job.",
    )
    alpaca_paper: bool = Field(
        default=True,
        description="Alpaca accounts trade Alpaca's paper API. 0 asks for the live API, which is "
        "refused unless ALPACA_LIVE=1 too.",
    )
    alpaca_live: bool = Field(
        default=False,
        description="The explicit switch that allows ALPACA_PAPER=0 (real money).",
    )
    alpaca_url: str | None = Field(
        default=None,
        description="Base URL of the Alpaca trading API instead of Alpaca's own (a proxy, or a "
        "local stub in tests). Unset: paper-api.alpaca.markets (api.alpaca.markets when live).",
    )
    portfolio_var_window: int = Field(
        default=252,
        ge=20,
        le=5000,
        description="Daily returns of the held symbols behind the historical VaR and CVaR.",
    )

    def market_bearer(self) -> SecretStr | None:
        """Return the token to send to the market service."""
        return self.market_token or self.api_token

    def backtest_bearer(self) -> SecretStr | None:
        """Return the token to send to the backtest service."""
        return self.backtest_token or self.api_token
