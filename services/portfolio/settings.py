"""Settings of the portfolio service (shared base: `shared.config.BaseServiceSettings`).

The peer settings (`*_url`, `*_token`, `*_timeout_s`) come from the service kit
(`shared.peers`); `PORTFOLIO_PEER_TIMEOUT_S` sets both peers' timeouts at once.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from shared.config import BaseServiceSettings
from shared.peers import peer_timeout, peer_token, peer_url

# The one timeout of both peers, as it was named before each had its own.
_TIMEOUT = ("PORTFOLIO_PEER_TIMEOUT_S", "peer_timeout_s")


class PortfolioSettings(BaseServiceSettings):
    """Settings of the portfolio service."""

    unknown_prefixes: ClassVar[tuple[str, ...]] = ("PORTFOLIO_",)

    market_url: str | None = peer_url("market", "portfolio", "the paper broker's prices")
    market_token: SecretStr | None = peer_token("market", "portfolio")
    market_timeout_s: float = peer_timeout("market", "portfolio", default=120.0, also=_TIMEOUT)
    backtest_url: str | None = peer_url("backtest", "portfolio", "a deployment's signals")
    backtest_token: SecretStr | None = peer_token("backtest", "portfolio")
    backtest_timeout_s: float = peer_timeout("backtest", "portfolio", default=120.0, also=_TIMEOUT)
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
