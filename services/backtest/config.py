"""The validated backtest configuration: the seed's ``BacktestConfig`` names, the request body
of ``POST /backtest``, and its translation into the engine's ``SimSpec``."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
)

from services.backtest.engine.core import SimSpec
from services.backtest.engine.runner import Bars, SimulationResult, make_spec, simulate
from services.backtest.expressions import InlineStrategy, SavedStrategy
from services.backtest.strategies import (
    STRATEGIES,
    SignalProvider,
    StrategyDef,
    build_targets,
)
from shared.execution import (
    DEFAULT_SLIPPAGE,
    AllIn,
    Commission,
    CommissionRate,
    MinCommission,
    PositionSize,
    Slippage,
    VolatilityTarget,
)
from shared.quant.kernels import atr_nb

PERIODS_PER_YEAR: dict[str, float] = {"1d": 252.0, "1wk": 52.0, "1mo": 12.0}

_SYMBOL = r"^[A-Za-z0-9.\-^=]{1,15}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- strategies: the registry's built-ins, a saved name, or inline rules ------------------


class _BuiltinStrategy(_Model):
    """Base of the built-in strategies' request models (one per registry entry)."""

    name: str
    params: BaseModel

    @property
    def label(self) -> str:
        """Return the name runs are stored and listed under."""
        return self.name


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# One model per built-in, made from the registry (STRATEGIES): a strategy is declared once.
BUILTIN_MODELS: dict[str, type[_BuiltinStrategy]] = {
    d.name: create_model(
        f"{_camel(d.name)}Strategy",
        __base__=_BuiltinStrategy,
        __doc__=d.description.strip().splitlines()[0],
        name=(Literal[d.name], ...),  # type: ignore[arg-type,valid-type]
        params=(d.params, Field(default_factory=d.params)),
    )
    for d in STRATEGIES.values()
}
BuyAndHoldStrategy = BUILTIN_MODELS["buy_and_hold"]


def _kind(value: Any) -> str:
    """Return which strategy model a request's `strategy` is: inline, a built-in, saved."""
    if isinstance(value, dict):
        if "rules" in value:
            return "inline"
        name = value.get("name")
        return name if isinstance(name, str) and name in STRATEGIES else "saved"
    if isinstance(value, InlineStrategy):
        return "inline"
    if isinstance(value, SavedStrategy):
        return "saved"
    return str(getattr(value, "name", "saved"))


if TYPE_CHECKING:
    StrategyConfig = _BuiltinStrategy | SavedStrategy | InlineStrategy
else:
    StrategyConfig = Annotated[
        Union[  # built from the registry: the members are not known statically
            (
                *(Annotated[m, Tag(n)] for n, m in BUILTIN_MODELS.items()),
                Annotated[SavedStrategy, Tag("saved")],
                Annotated[InlineStrategy, Tag("inline")],
            )
        ],
        Discriminator(_kind),
        Field(
            description=f"`name` {', '.join(STRATEGIES)} or a saved one, with `params`; "
            "or inline `rules` over declared `params`."
        ),
    ]
AnyStrategy = _BuiltinStrategy | SavedStrategy | InlineStrategy


def strategy_definition(strategy: AnyStrategy) -> tuple[StrategyDef, BaseModel]:
    """Return a request strategy's definition and validated parameter values.

    A saved strategy must have been resolved to its rules first (the service does);
    LanguageError for rules that do not compile.
    """
    if isinstance(strategy, InlineStrategy):
        return strategy.compiled()
    if isinstance(strategy, SavedStrategy):
        raise ValueError(f"strategy {strategy.name!r} is not resolved")
    return STRATEGIES[strategy.name], strategy.params


# -- the configuration ------------------------------------------------------------------------


class BacktestConfig(_Model):
    """One backtest: instrument(s), dates, strategy, costs, risk rules and data settings."""

    symbol: str | None = Field(default=None, pattern=_SYMBOL, description="One instrument.")
    symbols: list[Annotated[str, Field(pattern=_SYMBOL)]] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        validate_default=True,
        json_schema_extra={"uniqueItems": True},
        description="Several instruments traded as one portfolio with shared cash "
        "(instead of `symbol`), each once (case-insensitive).",
    )
    start_date: date = Field(description="First bar date (inclusive).")
    end_date: date = Field(description="Last bar date (inclusive), after start_date.")
    initial_capital: float = Field(default=100_000.0, gt=0, le=1e12, description="Cash.")
    strategy: StrategyConfig
    commission: Commission = 0.0
    commission_rate: CommissionRate = 0.0
    min_commission: MinCommission = 0.0
    slippage: Slippage = DEFAULT_SLIPPAGE
    position_size: PositionSize = Field(default_factory=lambda: AllIn(method="all_in"))
    fractional_shares: bool = Field(default=False, description="Allow fractional shares.")
    stop_loss: float | None = Field(
        default=None, gt=0, lt=1, description="Exit when price moves this fraction against."
    )
    take_profit: float | None = Field(
        default=None, gt=0, le=100, description="Exit when price moves this fraction in favour."
    )
    max_positions: int = Field(default=1, ge=1, le=50, description="Concurrent positions.")
    fill: Literal["next_open", "close"] = Field(
        default="next_open",
        description="`next_open`: orders decided at a bar's close fill at the next open; "
        "`close`: at that bar's close.",
    )
    warmup_period: int = Field(default=60, ge=0, le=5000, description="Bars before trading.")
    data_frequency: Literal["1d", "1wk", "1mo"] = Field(default="1d", description="Bar size.")
    risk_free_rate: float = Field(
        default=0.02, ge=0, lt=1, description="Annual risk-free rate for Sharpe and alpha."
    )

    @field_validator("end_date")
    @classmethod
    def _end_after_start(cls, v: date, info: ValidationInfo) -> date:
        start = info.data.get("start_date")
        if start is not None and v <= start:
            raise ValueError(f"end_date ({v}) must be after start_date ({start})")
        return v

    @field_validator("symbols")
    @classmethod
    def _one_of_symbol_symbols(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if "symbol" not in info.data:  # `symbol` itself is invalid: its own error says so
            return v
        if (info.data["symbol"] is None) == (v is None):
            raise ValueError("give exactly one of `symbol` or `symbols`")
        if v is not None and len({s.upper() for s in v}) != len(v):
            raise ValueError("each symbol at most once (case-insensitive)")
        return v

    @property
    def symbol_list(self) -> list[str]:
        """Return the instruments, upper-cased, in order."""
        return [s.upper() for s in (self.symbols or [self.symbol or ""])]

    @property
    def periods_per_year(self) -> float:
        """Return the bars per year implied by ``data_frequency``."""
        return PERIODS_PER_YEAR[self.data_frequency]

    def allows_short(self) -> bool:
        """Return whether the strategy may go short."""
        d, params = strategy_definition(self.strategy)
        return d.shorts(params)

    def to_spec(self, *, final_at_open: bool = False) -> SimSpec:
        """Return the engine settings of this configuration."""
        ps = self.position_size
        if isinstance(ps, VolatilityTarget):
            value = ps.annual_vol
        elif isinstance(ps, AllIn):
            value = 1.0
        else:
            value = ps.value
        return make_spec(
            initial_capital=self.initial_capital,
            commission=self.commission,
            commission_rate=self.commission_rate,
            min_commission=self.min_commission,
            slippage=self.slippage,
            size_method=ps.method,
            size_value=value,
            fractional=self.fractional_shares,
            allow_short=self.allows_short(),
            max_positions=self.max_positions,
            stop_loss=self.stop_loss,
            take_profit=self.take_profit,
            fill=self.fill,
            warmup=self.warmup_period,
            periods_per_year=self.periods_per_year,
            final_at_open=final_at_open,
        )


def atr_matrix(bars: Bars, period: int) -> np.ndarray:
    """Return the (n, m) ATR matrix of every symbol (NaN during its warm-up)."""
    return np.column_stack(
        [
            atr_nb(bars.high[:, j].copy(), bars.low[:, j].copy(), bars.close[:, j].copy(), period)
            for j in range(bars.n_symbols)
        ]
    )


def simulate_config(
    config: BacktestConfig,
    bars: Bars,
    signals: SignalProvider | None = None,
    *,
    final_at_open: bool = False,
) -> SimulationResult:
    """Build the strategy's targets on ``bars`` and run the engine under ``config``."""
    d, params = strategy_definition(config.strategy)
    target = build_targets(d, params, bars, signals)
    ps = config.position_size
    atr = atr_matrix(bars, ps.atr_period) if isinstance(ps, VolatilityTarget) else None
    return simulate(bars, target, config.to_spec(final_at_open=final_at_open), atr)
