"""Public contract of the portfolio service: accounts, deployments, orders, fills, risk.

Requests forbid unknown fields. Money is in the account's currency, ratios are fractions.
`strategy` and `position_size` are the backtest's (`POST /backtest`): the backtest service
validates and runs the strategy (`POST /backtest/signals`); sizing follows its rules.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.api import Page
from shared.execution import (
    DEFAULT_SLIPPAGE,
    AllIn,
    Commission,
    CommissionRate,
    FillFields,
    FixedCash,
    FixedShares,
    MinCommission,
    PercentEquity,
    Slippage,
)

SYMBOL = r"^[A-Za-z0-9.\-^=]{1,15}$"


class Request(BaseModel):
    """Base of the request models: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Base of the answer models."""

    model_config = ConfigDict(frozen=True)


# ---- requests ---------------------------------------------------------------------------


class AccountCreate(Request):
    """A new account: `paper` trades on the embedded paper broker."""

    name: str = Field(min_length=1, max_length=100, description="A name to recognise it by.")
    broker: Literal["paper", "alpaca"] = Field(
        default="paper",
        description="`paper`: the embedded paper broker (no keys, offline; replays history). "
        "`alpaca`: Alpaca's paper account with the server's stored keys (live only when the "
        "server sets ALPACA_PAPER=0 and ALPACA_LIVE=1); it trades only the latest closed "
        "session, and its cash and positions are the broker's.",
    )
    initial_cash: float = Field(
        default=100_000.0,
        gt=0,
        le=1e12,
        description="Starting cash (`paper`; an `alpaca` account starts with the broker's).",
    )


class Costs(Request):
    """The backtest's cost fields, with its defaults."""

    commission: Commission = 0.0
    commission_rate: CommissionRate = 0.0
    min_commission: MinCommission = 0.0
    slippage: Slippage = DEFAULT_SLIPPAGE


class RiskLimits(Request):
    """Limits every order of the deployment passes; null turns one off."""

    max_position_pct: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Largest position as a fraction of equity: a bigger opening order is cut.",
    )
    max_gross_exposure: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="Largest sum of |position values| over equity after an opening order; "
        "an order beyond it is cut, refused when nothing is left.",
    )
    max_orders_per_day: int | None = Field(
        default=None, ge=1, le=10_000, description="Orders per session; more are refused."
    )
    daily_loss_limit: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="A loss from the previous close beyond this fraction refuses new entries "
        "for the rest of the session (exits still pass).",
    )
    max_drawdown: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="A drawdown from the equity peak beyond this fraction halts the deployment "
        "until `POST /accounts/{id}/resume`.",
    )


# The backtest's sizing but volatility targeting (a deployment has no ATR of its own).
PositionSize = Annotated[
    AllIn | PercentEquity | FixedCash | FixedShares, Field(discriminator="method")
]


class StrategySpec(BaseModel):
    """A strategy exactly as `POST /backtest` takes it (`GET /backtest/strategies`); the
    backtest service validates it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Strategy name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its parameters.")


class DeploymentCreate(Request):
    """Trade a strategy on an account from `start_date`, as a backtest would."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "00000000-0000-0000-0000-000000000000",
                    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
                    "symbols": ["AAPL"],
                    "start_date": "2019-01-02",
                }
            ]
        },
    )

    account_id: uuid.UUID = Field(description="The account it trades.")
    strategy: StrategySpec
    symbols: list[Annotated[str, Field(pattern=SYMBOL)]] = Field(
        min_length=1,
        max_length=20,
        json_schema_extra={"uniqueItems": True},
        description="Instruments, each once (case-insensitive).",
    )
    start_date: date | None = Field(
        default=None,
        description="First bar of the strategy's window (the backtest's `start_date`: the "
        "first `warmup_period` bars only warm the indicators). Default: today.",
    )
    position_size: PositionSize = Field(default_factory=lambda: AllIn(method="all_in"))
    costs: Costs = Field(default_factory=Costs)
    risk: RiskLimits = Field(default_factory=RiskLimits)
    warmup_period: int = Field(default=60, ge=0, le=5000, description="Bars before trading.")
    max_positions: int = Field(default=1, ge=1, le=20, description="Concurrent positions.")
    fractional_shares: bool = Field(default=False, description="Allow fractional shares.")


class RunRequest(Request):
    """Process every completed session up to `until` not processed yet."""

    until: date = Field(description="Last session to process (inclusive).")


# ---- answers ----------------------------------------------------------------------------


class Position(Answer):
    """One held instrument."""

    symbol: str
    quantity: float = Field(description="Signed shares (negative: short).")
    average_price: float = Field(description="Entry fill price, slippage included.")
    last_price: float = Field(description="Latest price it is marked at.")
    market_value: float = Field(description="quantity x last_price.")
    unrealised_pnl: float = Field(description="quantity x (last_price - average_price).")


class Account(Answer):
    """An account's cash, positions and results."""

    id: uuid.UUID
    name: str
    broker: str
    initial_cash: float
    cash: float
    equity: float = Field(description="Cash plus the positions' market values.")
    positions: list[Position]
    realised_pnl: float = Field(description="Closed trades' pnl, commissions included.")
    unrealised_pnl: float
    exposure: float = Field(description="Sum of |market value| over equity (gross).")
    halted: bool = Field(description="Kill switch on: no order passes until resumed.")
    halt_reason: str | None
    created_at: datetime


class Deployment(Answer):
    """A strategy trading an account."""

    id: uuid.UUID
    account_id: uuid.UUID
    status: Literal["active", "stopped"]
    halt_reason: str | None = Field(description="Set while the drawdown limit halts it.")
    last_session: date | None = Field(description="Latest session processed.")
    pending: dict[str, int] = Field(description="Wishes to execute at the next open.")
    config: dict[str, Any]
    created_at: datetime


class RunResult(Answer):
    """What one `run` processed."""

    deployment_id: uuid.UUID
    sessions: int = Field(description="Sessions processed by this call.")
    first_session: date | None
    last_session: date | None
    orders: int
    fills: int
    refused: int
    equity: float


class Order(Answer):
    """One order: filled, refused by the risk manager (with why) or rejected by the broker."""

    id: int
    client_order_id: str = Field(description="Deterministic: deployment, session, symbol, side.")
    deployment_id: uuid.UUID | None
    session: date
    symbol: str
    side: Literal["buy", "sell"]
    quantity: float = Field(description="Shares sent (after any risk cut).")
    requested: float = Field(description="Shares the strategy's sizing asked for.")
    status: Literal["new", "submitted", "filled", "refused", "rejected"]
    reason: str | None


class OrderList(Answer):
    """A page of orders, oldest first."""

    orders: list[Order]
    page: Page


class Fill(FillFields, Answer):
    """One executed order, in the backtest's fill fields."""

    total_cost: float = Field(description="shares x price + commission.")
    pnl: float | None = Field(description="Realised pnl, on closing fills only.")
    order_id: int


class FillList(Answer):
    """A page of fills, oldest first."""

    fills: list[Fill]
    page: Page


class Breakers(Answer):
    """The risk manager's switches."""

    kill_switch: bool
    kill_reason: str | None
    halted_deployments: dict[str, str] = Field(description="Deployment id -> why (drawdown).")
    orders_last_session: int
    last_session: date | None


class Risk(Answer):
    """The current book's risk."""

    account_id: uuid.UUID
    equity: float
    exposure_by_symbol: dict[str, float] = Field(description="Market value over equity.")
    gross_exposure: float
    var_95: float | None = Field(
        description="Historical one-day 95% value at risk of the current book, in cash "
        "(a loss is positive); null without enough history."
    )
    cvar_95: float | None = Field(description="Mean loss beyond the VaR, in cash.")
    observations: int = Field(description="Daily returns behind VaR, CVaR and correlation.")
    correlation: dict[str, dict[str, float | None]] = Field(
        description="Correlation of the held symbols' daily returns."
    )
    drawdown: float = Field(description="Equity below its peak, a fraction (0 at the peak).")
    peak_equity: float
    breakers: Breakers


class FillDiff(Answer):
    """One fill the paper record and the backtest do not share (null: that side has none)."""

    session: date
    symbol: str
    direction: Literal["buy", "sell"]
    paper_shares: float | None
    paper_price: float | None
    backtest_shares: float | None
    backtest_price: float | None


class Drift(Answer):
    """A deployment's paper record beside a backtest of the same config on the same sessions."""

    run_id: str = Field(description="The backtest run compared (`backtest_get_results`).")
    sessions: int = Field(description="Sessions both have an equity for.")
    tracking_error: float | None = Field(
        description="Annualised standard deviation of the daily return differences (sqrt 252)."
    )
    max_equity_gap: float | None = Field(description="Largest |paper / backtest - 1| equity.")
    fills_compared: int
    fills_differing: int = Field(description="Fills on one side only or with other shares/price.")
    differences: list[FillDiff] = Field(description="The first 50 differing fills.")
    realised_costs: float = Field(description="Commission plus slippage the paper fills paid.")
    modelled_costs: float = Field(
        description="Commission plus slippage of the backtest's fills (its closing fill left out)."
    )
