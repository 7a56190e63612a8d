"""How an order is sized, what it costs and how its fill reads: one contract, two services.

`POST /backtest` and the portfolio's deployments take the same `position_size` and cost
fields and answer fills with the same fields; the portfolio's paper broker sizes and charges
an order by the backtest engine's rules. Services may not import one another, so what they
share is declared here once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# ---- position sizing (discriminated by `method`) ---------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllIn(_Request):
    """Spend all free cash (split evenly over the free position slots)."""

    method: Literal["all_in"]


class PercentEquity(_Request):
    """Open a position worth `value` (a fraction) of equity."""

    method: Literal["percent_equity"]
    value: float = Field(gt=0, le=1, description="Fraction of equity per position, (0, 1].")


class FixedCash(_Request):
    """Open a position worth `value` in cash."""

    method: Literal["fixed_cash"]
    value: float = Field(gt=0, description="Cash per position.")


class FixedShares(_Request):
    """Open a position of `value` shares."""

    method: Literal["fixed_shares"]
    value: float = Field(gt=0, description="Shares per position.")


class VolatilityTarget(_Request):
    """Size so that the position's ATR-estimated annual volatility is `annual_vol` of equity."""

    method: Literal["volatility_target"]
    annual_vol: float = Field(gt=0, le=2, description="Target annual volatility, a fraction.")
    atr_period: int = Field(default=14, ge=2, le=200, description="ATR window, bars.")


PositionSize = Annotated[
    AllIn | PercentEquity | FixedCash | FixedShares | VolatilityTarget,
    Field(discriminator="method"),
]

# ---- costs (the backtest's flat fields; the portfolio's `costs`) ------------------------

Commission = Annotated[float, Field(ge=0, le=100, description="Per share, in cash.")]
CommissionRate = Annotated[float, Field(ge=0, lt=0.1, description="Fraction of traded value.")]
MinCommission = Annotated[float, Field(ge=0, le=1e6, description="Per fill, in cash.")]
Slippage = Annotated[
    float, Field(ge=0, lt=0.1, description="Adverse price move per fill, a fraction.")
]
DEFAULT_SLIPPAGE = 0.001

# ---- fills ------------------------------------------------------------------------------


class FillFields(BaseModel):
    """The fields every fill answer starts with (the seed's `backtest_trades` columns)."""

    timestamp: datetime
    symbol: str
    direction: Literal["buy", "sell"]
    shares: float
    price: float = Field(description="Fill price, slippage included.")
    commission: float
    slippage_cost: float = Field(description="|fill - quote| x shares.")
