"""Public contract of the backtest service: requests and answers, documented for a cold reader.

Requests extend the seed's `BacktestConfig` (services/backtest/config.py) with what a request
adds (`adjusted`, `equity_points`, search settings). Every ratio is a fraction, never a
percent. A metric that is undefined on the data (a Sharpe ratio without variance, a profit
factor without a losing trade) is `null`.
"""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from services.backtest.config import BacktestConfig
from shared.api import Page
from shared.execution import FillFields
from shared.verdicts import PairedVerdict


def finite(x: float | None) -> float | None:
    """Return x as a float, or None when it is missing, NaN or infinite (JSON has neither)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


class Answer(BaseModel):
    """Base of the answer models: frozen, so a cached answer can be shared but never changed."""

    model_config = ConfigDict(frozen=True)


# ---- requests ---------------------------------------------------------------------------


class RunConfig(BacktestConfig):
    """A backtest configuration as a request carries it: the seed's names plus `adjusted`."""

    adjusted: bool = Field(
        default=False,
        description="Use dividend- and split-adjusted prices (the market's `adjusted=true`). "
        "Default: the vendor's prices as published.",
    )


EQUITY_POINTS_DOC = (
    "Most points of the equity curve in the answer (evenly spaced; first and last bar always "
    "kept); 0 leaves the curve out (the default through MCP: ask 20 for a sketch, "
    "`get_results` for the full curve). Metrics always use every bar."
)
# Through the MCP gateway a run answers without its curve unless asked (answers stay small).
EQUITY_POINTS_MCP: JsonDict = {"x-mcp-default": 0}


EXAMPLE: dict[str, Any] = {
    "symbol": "GOOG",
    "start_date": "2004-08-19",
    "end_date": "2013-03-01",
    "initial_capital": 10000,
    "strategy": {"name": "sma_crossover", "params": {"fast": 10, "slow": 20, "allow_short": True}},
    "commission_rate": 0.002,
    "slippage": 0.0,
    "warmup_period": 0,
}


class BacktestRequest(RunConfig):
    """One backtest: the seed's `BacktestConfig`, and how much of the equity curve to return."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    equity_points: int = Field(
        default=250,
        ge=0,
        le=20_000,
        description=EQUITY_POINTS_DOC,
        json_schema_extra=EQUITY_POINTS_MCP,
    )


class Range(BaseModel):
    """Evenly spaced values from `start` to `stop` inclusive, `step` apart."""

    model_config = ConfigDict(extra="forbid")

    start: float = Field(description="First value.")
    stop: float = Field(description="Last value (included when on the step grid).")
    step: float = Field(gt=0, description="Distance between values (> 0).")


ParamValues = list[float] | Range
Objective = Literal[
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "total_return",
    "cagr",
    "annualized_return",
    "annualized_volatility",
    "max_drawdown",
    "win_rate",
    "exposure",
    "final_capital",
    "total_trades",
]
PARAM_GRID_DOC = (
    "Strategy parameter -> values to try: a list (`[10, 20, 50]`) or a range "
    '(`{"start": 5, "stop": 50, "step": 5}`, stop included). Parameters not named keep '
    "their `strategy.params` value. Integer parameters take integral values only."
)
CONSTRAINTS_DOC = (
    "Conditions every combination must meet, each `<param> <op> <param or number>` with op "
    "one of `< <= > >= == !=`, e.g. `fast < slow`. Combinations the strategy rejects anyway "
    "(its own parameter checks) are skipped and counted in `n_invalid`."
)
OBJECTIVE_DOC = "The metric to rank combinations by (`max_drawdown` is negative: higher is better)."


class SearchSettings(BaseModel):
    """What a parameter search maximises, and under which conditions."""

    param_grid: dict[str, ParamValues] = Field(
        default_factory=dict, max_length=8, description=PARAM_GRID_DOC
    )
    constraints: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=16, description=CONSTRAINTS_DOC
    )
    objective: Objective = Field(default="sharpe_ratio", description=OBJECTIVE_DOC)
    maximize: bool = Field(
        default=True, description="Rank the objective highest first (false: lowest first)."
    )


class OptimizeRequest(SearchSettings, RunConfig):
    """A parameter search on one instrument, with overfitting statistics of the winner."""

    param_grid: dict[str, ParamValues] = Field(
        min_length=1, max_length=8, description=PARAM_GRID_DOC
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **EXAMPLE,
                    "param_grid": {
                        "fast": {"start": 5, "stop": 50, "step": 5},
                        "slow": {"start": 10, "stop": 200, "step": 10},
                    },
                    "constraints": ["fast < slow"],
                    "objective": "sharpe_ratio",
                }
            ]
        }
    )

    method: Literal["grid", "random"] = Field(
        default="grid",
        description="`grid`: every combination; `random`: `n_trials` of them drawn without "
        "replacement with `seed`.",
    )
    n_trials: int = Field(
        default=200, ge=1, le=200_000, description="Combinations to draw for `random`."
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Random draw seed.")
    top_n: int = Field(default=10, ge=1, le=100, description="Best combinations to return.")
    pbo_splits: int = Field(
        default=10,
        ge=4,
        le=16,
        multiple_of=2,
        description="Blocks of bars for the PBO's combinatorially symmetric cross-validation "
        "(C(S, S/2) splits: 10 gives 252, 16 gives 12,870; more is slower).",
    )


class WalkForwardRequest(SearchSettings, RunConfig):
    """Rolling (or anchored) in-sample fit and out-of-sample test windows on one instrument."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **EXAMPLE,
                    "param_grid": {"fast": [5, 10, 20], "slow": [30, 50, 100]},
                    "train_period": 252,
                    "test_period": 63,
                }
            ]
        }
    )

    train_period: int = Field(default=252, ge=20, le=10_000, description="In-sample bars.")
    test_period: int = Field(default=21, ge=2, le=5_000, description="Out-of-sample bars.")
    anchored: bool = Field(
        default=False,
        description="In-sample windows all start at the first bar (expanding) instead of rolling.",
    )
    equity_points: int = Field(
        default=250,
        ge=0,
        le=20_000,
        description=EQUITY_POINTS_DOC,
        json_schema_extra=EQUITY_POINTS_MCP,
    )
    flat_at_boundary: bool = Field(
        default=False,
        description="true: every test window starts flat and closes what is open at its end "
        "(a round trip of costs at each boundary). false: the windows trade as one run, and "
        "a position stays open across a boundary while the next window holds the same side.",
    )
    retrain_every: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="`ml_ensemble` only: train a new version every this many windows; the "
        "windows between trade the last version trained (on bars before their test "
        "windows), so the LSTM need not retrain monthly. Rule strategies refit every window.",
    )


class MonteCarloRequest(BaseModel):
    """Resample a stored run (`run_id`) or a new backtest (`config`): give exactly one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"config": EXAMPLE, "n_runs": 1000, "seed": 0}]},
    )

    run_id: uuid.UUID | None = Field(
        default=None,
        description="A stored backtest or walk-forward to resample (a walk-forward's "
        "stitched out-of-sample bar returns).",
    )
    config: BacktestRequest | None = Field(
        default=None, description="A backtest to run (and store) and then resample."
    )
    n_runs: int = Field(default=1000, ge=1, le=200_000, description="Resampled paths per method.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Random seed.")
    block: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Block length in bars of the block bootstrap. Default: n^(1/3).",
    )
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="Confidence level of VaR and CVaR."
    )


# ---- answers ----------------------------------------------------------------------------

Num = float | None


class Metrics(Answer):
    """Performance of one equity curve. Fractions, not percents; `null` when undefined."""

    final_capital: float = Field(description="Equity after the last bar, in cash.")
    total_return: Num = Field(description="final_capital / initial_capital - 1.")
    cagr: Num = Field(description="Compound annual growth over calendar time.")
    annualized_return: Num = Field(description="Geometric mean return per year of bars.")
    annualized_volatility: Num = Field(description="Sample std of bar returns, annualised.")
    periods_per_year: float = Field(description="Bars per year used to annualise (252 daily).")
    sharpe_ratio: Num = Field(description="Annualised mean excess return over its sample std.")
    sortino_ratio: Num = Field(description="Annualised, downside deviation below risk-free.")
    calmar_ratio: Num = Field(description="annualized_return / |max_drawdown|.")
    max_drawdown: Num = Field(description="Worst peak-to-trough fall, a negative fraction.")
    max_drawdown_duration: int = Field(description="Longest drawdown, bars peak to recovery.")
    avg_drawdown: Num = Field(description="Mean depth of the drawdown episodes.")
    exposure: Num = Field(description="Fraction of bars ending with an open position.")
    total_trades: int = Field(description="Closed round trips.")
    win_rate: Num = Field(description="Fraction of round trips with positive pnl.")
    profit_factor: Num = Field(description="Gross profit / gross loss (null: no losing trade).")
    expectancy: Num = Field(description="Mean pnl per round trip, in cash.")
    alpha: Num = Field(description="Annualised alpha against buy-and-hold on the same bars.")
    beta: Num = Field(description="Beta against buy-and-hold on the same bars.")
    t_statistic: Num = Field(
        description="t statistic of the mean excess bar return (less the risk-free rate) being 0."
    )
    p_value: Num = Field(description="Two-sided p-value of that t-test (small: mean != 0).")
    mean_return_ci: list[Num] = Field(
        description="95% bootstrap confidence interval of the mean excess bar return: [low, high]."
    )
    probabilistic_sharpe_ratio: Num = Field(
        description="Probability that the true Sharpe ratio is above zero (PSR), in [0, 1]."
    )
    rejected_orders: int = Field(description="Orders refused (no cash, or max_positions).")
    resized_orders: int = Field(description="Orders cut to what the cash could pay for.")


class Benchmark(Answer):
    """Buy-and-hold on the same bars, costs and warm-up (an equal split for several symbols)."""

    strategy: Literal["buy_and_hold"] = "buy_and_hold"
    final_capital: float
    total_return: Num
    cagr: Num
    annualized_return: Num
    annualized_volatility: Num
    sharpe_ratio: Num
    sortino_ratio: Num
    max_drawdown: Num


class TradesSummary(Answer):
    """What the fills add up to; `GET /trades/{run_id}` lists them."""

    fills: int = Field(description="Orders executed (an entry and its exit are two fills).")
    round_trips: int = Field(description="Closed trades.")
    winning: int
    losing: int
    win_rate: Num
    profit_factor: Num
    expectancy: Num = Field(description="Mean pnl per round trip, in cash.")
    avg_trade_return: Num = Field(description="Mean pnl over the equity at entry.")
    best_trade_return: Num
    worst_trade_return: Num
    total_commission: float
    total_slippage: float
    exits: dict[str, int] = Field(
        description="Closing fills by reason: `signal`, `stop_loss`, `take_profit`, `end`."
    )
    rejected_orders: int
    resized_orders: int


class EquityCurve(Answer):
    """The equity and the benchmark's equity at (downsampled) bar dates."""

    timestamps: list[date]
    equity: list[float]
    benchmark: list[float]
    points: int = Field(description="Points returned.")
    total_points: int = Field(description="Bars in the run (every one is in the metrics).")


KIND_DOC = "What was stored: `backtest`, `walk_forward` or `optimization`."
AnalysisKind = Literal["backtest", "walk_forward", "optimization"]


class AnalysisLinks(Answer):
    """Where to read a stored walk-forward or search again."""

    result: str = Field(description="`GET` it: the stored answer.")
    chart: str | None = Field(
        default=None, description="A walk-forward's stitched equity chart (PNG); null otherwise."
    )


class RunLinks(Answer):
    """Where to read more of a stored run."""

    result: str
    trades: str
    chart: str


class BacktestResult(Answer):
    """A stored backtest: config, metrics beside buy-and-hold, equity, trades summary."""

    kind: Literal["backtest"] = Field(default="backtest", description=KIND_DOC)
    run_id: uuid.UUID
    created_at: datetime
    strategy: str
    symbols: list[str]
    start: date = Field(description="First bar used.")
    end: date = Field(description="Last bar used.")
    bars: int
    bars_hash: str = Field(description="SHA-256 of the input bars: the same hash, same bars.")
    config: dict[str, Any] = Field(description="The full configuration, defaults filled in.")
    metrics: Metrics
    benchmark: Benchmark
    trades: TradesSummary
    equity: EquityCurve
    notes: list[str] = Field(description="What to keep in mind when reading these numbers.")
    links: RunLinks


class RunSummary(Answer):
    """One stored run, as listed (a search's figures are its winner's)."""

    run_id: uuid.UUID
    kind: AnalysisKind = Field(description=KIND_DOC)
    created_at: datetime
    strategy: str
    symbols: list[str]
    start_date: date
    end_date: date
    initial_capital: float
    final_capital: Num
    total_return: Num
    sharpe_ratio: Num
    max_drawdown: Num
    win_rate: Num
    total_trades: int | None


class RunList(Answer):
    """Stored runs, newest first."""

    results: list[RunSummary]
    page: Page


class Fill(FillFields, Answer):
    """One executed order (the seed's `backtest_trades` columns, plus why and its return)."""

    total_cost: float = Field(description="Cash the fill cost (+) or brought in (-).")
    pnl: Num = Field(description="Realised pnl, on closing fills only.")
    portfolio_value: Num = Field(description="Equity right after the fill.")
    reason: str | None = Field(description="`signal`, `stop_loss`, `take_profit` or `end`.")
    trade_return: Num = Field(description="Closing fills: pnl over the equity at entry.")


class TradeList(Answer):
    """A page of a run's fills, oldest first."""

    run_id: uuid.UUID
    trades: list[Fill]
    page: Page


class StrategyInfo(Answer):
    """One strategy and its parameters."""

    name: str
    description: str
    kind: Literal["builtin", "saved"] = "builtin"
    available: bool = Field(description="False when it needs a service that is not there.")
    note: str | None = None
    parameters: dict[str, Any] = Field(description="JSON schema of `strategy.params`.")
    defaults: dict[str, Any]
    searchable: list[str] = Field(description="Numeric parameters a `param_grid` may search.")
    version: int | None = Field(default=None, description="Saved: this version (immutable).")
    rules: dict[str, str] | None = Field(default=None, description="Saved: normal rule text.")
    created_at: datetime | None = None


class StrategyList(Answer):
    """Every strategy `strategy.name` accepts."""

    strategies: list[StrategyInfo]


class Trial(Answer):
    """One combination of a search and its metrics on the whole period."""

    rank: int
    params: dict[str, float | int | bool]
    metrics: dict[str, int | float | None]


class DeflatedSharpe(Answer):
    """The Deflated Sharpe Ratio's inputs: Sharpe ratios of excess returns, per bar unless
    annualised (the README's "Reading DSR and PBO")."""

    n_trials: int
    effective_trials: Num = Field(
        description="Independent trials with the same expected best Sharpe as the search's "
        "correlated ones (from the correlation of the sampled trials' bar returns)."
    )
    sampled_trials: int = Field(description="Trials rerun for that correlation.")
    sharpe: Num = Field(description="The winner's per-bar excess-return Sharpe.")
    sharpe_annualized: Num
    threshold_sharpe: Num = Field(
        description="SR0: the expected best per-bar Sharpe of effective_trials skill-less trials."
    )
    threshold_sharpe_annualized: Num
    sharpe_variance: Num = Field(
        description="Null variance of the per-bar Sharpe estimator (with skew and kurtosis)."
    )
    bars: int
    skewness: Num
    kurtosis: Num = Field(description="The winner's kurtosis (3 for normal returns).")
    cross_trial_dsr: Num = Field(
        description="The paper's variant: SR0 from the variance of the trials' Sharpe ratios "
        "and n_trials; blind to a grid where some parameters truly work."
    )
    cross_trial_threshold_sharpe: Num
    cross_trial_variance: Num


class OptimizeResult(Answer):
    """The best combinations, and whether the winner's edge survives the search."""

    kind: Literal["optimization"] = Field(default="optimization", description=KIND_DOC)
    run_id: uuid.UUID | None = Field(
        default=None, description="Its id: `GET /results/{run_id}` answers it again."
    )
    created_at: datetime | None = Field(default=None, description="When it was stored.")
    strategy: str
    symbol: str
    start: date
    end: date
    bars: int
    bars_hash: str
    method: Literal["grid", "random"]
    objective: str
    maximize: bool
    n_combinations: int = Field(description="Combinations meeting the constraints.")
    n_trials: int = Field(description="Backtests run (every one counts for DSR and PBO).")
    n_invalid: int = Field(description="Combinations the strategy's own checks rejected.")
    best_params: dict[str, float | int | bool]
    top: list[Trial]
    deflated_sharpe_ratio: Num = Field(
        description="P(the winner's excess-return Sharpe beats the best of effective_trials "
        "skill-less trials), "
        "[0, 1]; above 0.95 is significant."
    )
    deflated_sharpe: DeflatedSharpe | None = Field(
        default=None, description="The DSR's inputs (null without a Sharpe to deflate)."
    )
    pbo: Num = Field(
        description="Probability of backtest overfitting by CSCV, [0, 1]: the share of splits "
        "where the in-sample winner ranks at or below the median out of sample."
    )
    pbo_splits: int
    reading: str = Field(
        description="One line: whether the best is more than luck (DSR) and whether picking "
        "the in-sample best helps (PBO)."
    )
    elapsed_s: float
    backtests_per_second: float
    notes: list[str] = Field(
        default_factory=list,
        description="What to keep in mind: e.g. the bars not reaching an end of the dates asked.",
    )
    links: AnalysisLinks | None = Field(default=None, description="Where to read it again.")


class InSample(Answer):
    """The fitted combination's performance on its training window."""

    objective: Num
    annualized_return: Num
    sharpe_ratio: Num


class OutOfSample(Answer):
    """The fitted combination's performance on the test window that follows."""

    total_return: Num
    annualized_return: Num
    sharpe_ratio: Num
    max_drawdown: Num
    total_trades: int


TEST_DOC = (
    "The paired test of the realised out-of-sample calls against the naive baselines: the "
    "three-way verdict (`beats`, `does_not_beat`, `insufficient_evidence` below `min_calls`), "
    "`n`, and per baseline the counts b (`model_only`), c (`baseline_only`) and the exact "
    "McNemar p-value."
)


class HitRates(Answer):
    """Share of correct direction calls on the bars whose outcome is known."""

    model: Num = Field(description="The model's calls.")
    majority: Num = Field(description="Always the training labels' most frequent class.")
    previous: Num = Field(description="Yesterday's direction.")


class WindowCalls(Answer):
    """An `ml_ensemble` window: the version it traded and how its calls fared."""

    version: str = Field(description="The model version traded in this window.")
    trained: bool = Field(description="Whether this window trained it (see `retrain_every`).")
    training_seconds: Num = Field(description="Training time when this window trained.")
    calls: int = Field(description="Bars called in the test window.")
    realised: int = Field(description="Of them, bars whose outcome is known in the window.")
    hit_rate: HitRates
    baseline_test: PairedVerdict = Field(description=TEST_DOC + " This window's bars only.")
    beats_baselines: bool = Field(description="`baseline_test.verdict` is `beats`.")


class WindowResult(Answer):
    """One walk-forward window."""

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    params: dict[str, float | int | bool]
    in_sample: InSample
    out_of_sample: OutOfSample
    ml: WindowCalls | None = Field(default=None, description="`ml_ensemble` only.")


class MlWalkForward(Answer):
    """The models' out-of-sample calls over every window, against the naive baselines."""

    model: str = Field(description="Registry name the windows' versions were trained under.")
    versions: list[str] = Field(description="The versions trained, in window order.")
    retrain_every: int
    training_seconds: float = Field(description="Training time over all windows.")
    calls: int
    realised: int = Field(description="Out-of-sample bars whose outcome is known.")
    hit_rate: HitRates = Field(description="Over the realised out-of-sample bars of all windows.")
    windows_beating_baselines: int = Field(
        description="Windows whose own `baseline_test` verdict is `beats`."
    )
    baseline_test: PairedVerdict = Field(
        description=TEST_DOC + " Per-bar correctness pooled over all windows."
    )
    beats_baselines: bool = Field(
        description="`baseline_test.verdict` is `beats` (derived from the three-way verdict)."
    )
    reading: str


class WalkForwardResult(Answer):
    """Windows fitted in sample and tested out of sample, stitched into one OOS equity."""

    kind: Literal["walk_forward"] = Field(default="walk_forward", description=KIND_DOC)
    run_id: uuid.UUID | None = Field(
        default=None, description="Its id: `GET /results/{run_id}` answers it again."
    )
    created_at: datetime | None = Field(default=None, description="When it was stored.")
    strategy: str
    symbol: str
    bars: int
    bars_hash: str
    anchored: bool
    train_period: int
    test_period: int
    objective: str
    n_windows: int
    windows: list[WindowResult]
    metrics: Metrics = Field(description="Of the stitched out-of-sample equity.")
    benchmark: Benchmark = Field(description="Buy-and-hold over the out-of-sample bars.")
    equity: EquityCurve
    in_sample_annualized_return: Num = Field(description="Mean over the windows.")
    out_of_sample_annualized_return: Num
    walk_forward_efficiency: Num = Field(
        description="Out-of-sample over in-sample annualised return (null when in-sample <= 0)."
    )
    reading: str
    ml: MlWalkForward | None = Field(
        default=None, description="`ml_ensemble` only: out-of-sample hit rates vs baselines."
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What to keep in mind: e.g. the bars not reaching an end of the dates asked.",
    )
    links: AnalysisLinks | None = Field(default=None, description="Where to read it again.")


StoredResult = Annotated[
    BacktestResult | WalkForwardResult | OptimizeResult, Field(discriminator="kind")
]


class Percentiles(Answer):
    """Percentiles of a resampled quantity."""

    p5: float
    p25: float
    p50: float
    p75: float
    p95: float


class Distribution(Answer):
    """The outcome of one resampling method over n_runs paths."""

    final_return: Percentiles
    max_drawdown: Percentiles = Field(
        description="Worst drawdown of each path, measured at drawdown_resolution."
    )
    drawdown_resolution: Literal["trade", "bar"] = Field(
        description="`trade`: equity marked only when a trade closes (trade to trade), "
        "compare with actual_trade_max_drawdown; `bar`: marked every bar, compare with "
        "actual_max_drawdown."
    )
    probability_of_loss: float
    var: float = Field(
        description="Value at risk: the loss (a positive fraction) that the worst "
        "1 - confidence of paths exceed; negative when even they gain."
    )
    cvar: float = Field(description="Mean loss of the paths at or beyond the VaR (same sign).")


class MonteCarloResult(Answer):
    """Trade-order and block bootstrap of a run."""

    run_id: uuid.UUID
    n_runs: int
    seed: int
    block: int
    confidence: float
    n_trades: int
    actual_total_return: Num
    actual_max_drawdown: Num = Field(
        description="The run's worst drawdown bar to bar (the block bootstrap's resolution)."
    )
    actual_trade_max_drawdown: Num = Field(
        description="The run's worst drawdown trade to trade: its closed trades compounded in "
        "their order (the trade bootstrap's resolution; null without trades)."
    )
    trade_bootstrap: Distribution | None = Field(
        description="Trades resampled with replacement (null without closed trades)."
    )
    block_bootstrap: Distribution
    reading: str
