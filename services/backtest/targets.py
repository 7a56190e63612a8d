"""`POST /signals`: a strategy's wish per bar, exactly as a backtest of the same config sees it.

The portfolio service trades deployments on these wishes over HTTP (it never builds a
strategy itself), so a paper deployment makes the decisions `POST /backtest` makes: the same
bars (from `start_date`, the same warm-up), the same strategy code, the same mapping of a
target to a side (`allow_short`). A module of its own so the backtest's routes and schemas
stay as they are.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import numpy as np
import pandas as pd
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.backtest.config import BacktestConfig, strategy_definition
from services.backtest.routes import CONFIG_RULES, RUN_ERRORS, Service
from services.backtest.schemas import RunConfig
from services.backtest.service import BacktestService
from services.backtest.strategies import build_targets
from shared.rules import documents_rules, rules_extension

router = APIRouter()


class SignalsRequest(RunConfig):
    """What `POST /backtest` accepts (costs and sizing are read but do not change the wishes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "AAPL",
                    "start_date": "2019-01-02",
                    "end_date": "2019-12-31",
                    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}},
                }
            ]
        }
    )


class SignalSeries(BaseModel):
    """One instrument's wish per bar: 1 long, -1 short, 0 flat, null no change."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    wishes: list[int | None]


class Signals(BaseModel):
    """A strategy's wish per bar of the aligned bars of a backtest of the same config."""

    model_config = ConfigDict(frozen=True)

    strategy: dict[str, object] = Field(
        description="The strategy as it ran (`ml_ensemble` with its version pinned)."
    )
    timestamps: list[datetime] = Field(description="The bars' timestamps (UTC), oldest first.")
    warmup_period: int = Field(description="Wishes before this bar index are not traded.")
    allow_short: bool = Field(description="Whether a negative target opens a short.")
    series: list[SignalSeries]
    bars_hash: str = Field(description="SHA-256 of the bars the wishes were computed on.")


def wishes(target: np.ndarray, allow_short: bool) -> list[int | None]:
    """Return the engine's reading of one target column: sign, shorts flat unless allowed."""
    out: list[int | None] = []
    for v in target:
        if v != v:
            out.append(None)
        elif v > 0.0:
            out.append(1)
        elif v < 0.0 and allow_short:
            out.append(-1)
        else:
            out.append(0)
    return out


async def compute_signals(service: BacktestService, body: BacktestConfig) -> Signals:
    """Load the config's bars and return its strategy's wish per bar."""
    assert isinstance(body, RunConfig)
    run: RunConfig = await service.catalog.resolve(body)  # a saved strategy's rules
    loaded = await service.runs.load(run)
    ml = await service.runs.ml_signals(run, loaded)
    config = ml.request if ml is not None else run
    provider = ml.targets if ml is not None else None
    bars = loaded.bars
    definition, params = strategy_definition(config.strategy)
    target = await asyncio.to_thread(build_targets, definition, params, bars, provider)
    short = config.allows_short()
    return Signals(
        strategy=config.strategy.model_dump(mode="json"),
        timestamps=[pd.Timestamp(t).tz_localize("UTC").to_pydatetime() for t in bars.index],
        warmup_period=config.warmup_period,
        allow_short=short,
        series=[
            SignalSeries(symbol=s, wishes=wishes(target[:, j], short))
            for j, s in enumerate(bars.symbols)
        ],
        bars_hash=loaded.bars_hash,
    )


@router.post(
    "/signals",
    operation_id="get_signals",
    response_model=Signals,
    responses=RUN_ERRORS,
    summary="A strategy's target side per bar",
    # The portfolio service's operation, not an MCP tool (the gateway excludes `internal`).
    tags=["internal"],
    openapi_extra=rules_extension(*CONFIG_RULES),
)
@documents_rules(*CONFIG_RULES)
async def get_signals(body: SignalsRequest, service: Service) -> Signals:
    """Return the strategy's wish on every bar of the config's aligned bars, as a backtest
    of the same config reads it: 1 long, -1 short, 0 flat, null no change (`allow_short`
    false turns a short wish into flat). Wishes at bar indexes below `warmup_period` are not
    traded by a backtest; a wish decided at a bar's close fills at the next bar's open. The
    portfolio service trades deployments on this answer."""
    return await compute_signals(service, body)
