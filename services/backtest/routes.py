"""HTTP routes of the backtest service: parse, call the service, return a schema or a job.

Route docstrings become the MCP tool descriptions: they say what comes back, in which
units, and when a request answers directly (200) or runs as a job (202 + `Location`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from services.backtest.schemas import (
    AnalysisKind,
    AnalysisLinks,
    BacktestRequest,
    BacktestResult,
    MonteCarloRequest,
    MonteCarloResult,
    OptimizeRequest,
    OptimizeResult,
    RunLinks,
    RunList,
    StoredResult,
    TradeList,
    WalkForwardRequest,
    WalkForwardResult,
)
from services.backtest.service import BacktestService
from services.backtest.service.common import Prepared
from services.backtest.strategies import STRATEGIES
from shared.api import Limit, Offset, ProblemDocs, answer_off_loop
from shared.errors import AppError
from shared.jobs import JOBS, JobContext, JobRunner, accepted, accepted_responses
from shared.rules import CrossFieldRule, documents_rules, rules_extension
from shared.state import Slot

router = APIRouter()
T = TypeVar("T")
ABOVE: dict[tuple[str, str], list[str]] = {}
for _d in STRATEGIES.values():
    for _pair in _d.above:
        ABOVE.setdefault(_pair, []).append(_d.name)

errors = ProblemDocs(
    {
        404: "The symbol (or stored run) does not exist.",
        422: "An input is invalid (`field` names it): a bad date range, an unknown strategy "
        "parameter, a param_grid the strategy rejects, too few bars for the windows, or a "
        "strategy this deployment cannot run (`strategy_unavailable`: `ml_ensemble` without "
        "a predictor).",
        502: "The market service failed to give the bars.",
        503: "The database or the market service is unavailable, the service is at its "
        "limit of queued jobs (`jobs_full`, with `Retry-After`), or work answered directly "
        "ran past the direct-answer time limit (`direct_timeout`).",
    }
)
RUN_ERRORS = errors(400, 401, 404, 422, 502, 503)
READ_ERRORS = errors(401, 404, 422, 503)
RunId = Annotated[
    uuid.UUID,
    Path(description="The run's id (`run_id` of a backtest, walk-forward or optimize answer)."),
]
EquityPoints = Annotated[
    int,
    Query(
        ge=2,
        le=20_000,
        description="Most points of the equity curve (evenly spaced; metrics use every bar).",
    ),
]
SymbolQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9.\-^=]{1,15}$",
        description="Only runs that traded this instrument (case-insensitive).",
    ),
]
StrategyQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_]{1,100}$",
        description="Only runs of this strategy name.",
    ),
]
KindQuery = Annotated[
    AnalysisKind | None,
    Query(description="Only runs of this kind: `backtest`, `walk_forward` or `optimization`."),
]


# The app's BacktestService, built in its lifespan.
BACKTEST = Slot("backtest", BacktestService)
Service = Annotated[BacktestService, Depends(BACKTEST)]
Jobs = Annotated[JobRunner, Depends(JOBS)]


def _prefix(request: Request) -> str:
    """Return this app's mount point (`/backtest` under `trading serve`)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def with_links(result: BacktestResult, prefix: str) -> BacktestResult:
    """Return result with its links under the app's mount point."""
    if not prefix:
        return result
    links = result.links
    return result.model_copy(
        update={
            "links": RunLinks(
                result=prefix + links.result,
                trades=prefix + links.trades,
                chart=prefix + links.chart,
            )
        }
    )


def with_prefix(result: Any, prefix: str) -> Any:
    """Return any stored answer with its links under the app's mount point."""
    if isinstance(result, BacktestResult):
        return with_links(result, prefix)
    links = getattr(result, "links", None)
    if not prefix or not isinstance(links, AnalysisLinks):
        return result
    chart = prefix + links.chart if links.chart else None
    return result.model_copy(
        update={"links": AnalysisLinks(result=prefix + links.result, chart=chart)}
    )


async def _backtest_job(
    service: BacktestService, body: BacktestRequest, prefix: str, ctx: JobContext
) -> dict[str, Any]:
    ctx.report(0, 1, "loading bars")
    result = await service.runs.run_backtest(body)
    ctx.report(1, 1, "stored")
    return with_links(result, prefix).model_dump(mode="json")


async def _prepared_job(
    service: BacktestService, prepared: Prepared, prefix: str, ctx: JobContext
) -> Any:
    result = await service.analyses.run_prepared(prepared, ctx)
    return with_prefix(result, prefix).model_dump(mode="json")


async def _start(
    request: Request, service: BacktestService, jobs: JobRunner, prepared: Prepared
) -> Any:
    """Answer prepared work directly, or start it as a job (202)."""
    prefix = _prefix(request)
    if not prepared.needs_job:
        limit_s = service.settings.backtest_direct_timeout_s
        answer = await answer_directly(request, service.analyses.run_prepared(prepared), limit_s)
        return with_prefix(answer, prefix)
    job = await jobs.submit(
        prepared.work, prepared.request, partial(_prepared_job, service, prepared, prefix)
    )
    return accepted(request, job)


class DirectTimeoutError(AppError):
    """Work answered directly ran past the service's limit for direct answers."""

    status = 503
    code = "direct_timeout"
    title = "Took too long to answer directly"


class ClientGoneError(AppError):
    """The client closed the connection before its direct answer was ready."""

    status = 503
    code = "client_disconnected"
    title = "Client disconnected"


DISCONNECT_POLL_S = 0.1


async def _disconnected(request: Request) -> None:
    """Return once the request's client has closed the connection."""
    while True:
        if await request.is_disconnected():
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def answer_directly(request: Request, work: Awaitable[T], limit_s: float) -> T:
    """Await work for a direct answer; stop it when the client goes or limit_s passes.

    Stopping cancels the awaiting task: `optimize.Inline` then sets the work's cancel flag,
    and the engine thread drops it at its next check.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {task, gone}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, AppError):
            await task
        if gone in done:
            raise ClientGoneError("The client closed the connection; the work was stopped.")
        raise DirectTimeoutError(
            f"The work did not finish within the {limit_s:g} s limit of a direct answer and "
            "was stopped. Make it smaller (fewer combinations or runs, a shorter range).",
        )
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()


# Rules across inputs a JSON schema cannot state: listed in each operation's description
# and its x-cross-field-rules extension (the contract tests accept these 422s only).
CONFIG_RULES = (
    CrossFieldRule(
        ("symbols", "symbol"),
        "exactly one of `symbol` or `symbols`; each of `symbols` once (case-insensitive)",
    ),
    CrossFieldRule(("end_date", "start_date"), "`end_date` is after `start_date`"),
    *(  # the registry's cross-field parameter rules (slow > fast, ...)
        CrossFieldRule(
            (f"strategy.params.{high}", f"strategy.params.{low}"),
            f"`strategy.params.{high}` > `{low}` ({', '.join(names)})",
        )
        for (high, low), names in ABOVE.items()
    ),
    CrossFieldRule(
        ("data_frequency", "strategy.name"), "`ml_ensemble` trades daily bars: `data_frequency` 1d"
    ),
    CrossFieldRule(
        ("strategy.rules", "strategy.params", "strategy.name", "strategy.version"),
        "inline `strategy.rules` compile in the strategy language (`GET /strategies/language`) "
        "over the `$params` declared; a saved `strategy.name` (and `version`) exists and its "
        "`strategy.params` name its `$params`",
    ),
)
SEARCH_RULES = (
    CrossFieldRule(
        ("param_grid", "strategy.name"),
        "`param_grid` names searchable parameters of the strategy (`GET /strategies`) with "
        "values its parameter schema accepts",
    ),
    CrossFieldRule(("constraints", "param_grid"), "`constraints` compare `param_grid` parameters"),
)
WALK_FORWARD_RULES = (
    *CONFIG_RULES,
    *SEARCH_RULES,
    CrossFieldRule(("warmup_period", "train_period"), "`warmup_period` < `train_period`"),
    CrossFieldRule(
        ("retrain_every", "strategy.name"), "`retrain_every` > 1 only with `ml_ensemble`"
    ),
    CrossFieldRule(("param_grid", "strategy.name"), "no `param_grid` with `ml_ensemble`"),
)
OPTIMIZE_RULES = (
    *CONFIG_RULES,
    *SEARCH_RULES,
    CrossFieldRule(("strategy.name",), "`ml_ensemble` cannot be optimised (it is trained)"),
)
MONTE_CARLO_RULES = (
    CrossFieldRule(("run_id", "config"), "exactly one of `run_id` or `config`"),
    *(
        CrossFieldRule(tuple(f"config.{f}" for f in r.fields), f"in `config`: {r.rule}")
        for r in CONFIG_RULES
    ),
)


@router.post(
    "/backtest",
    operation_id="run_backtest",
    response_model=BacktestResult,
    responses={**accepted_responses(), **RUN_ERRORS},
    summary="Run one backtest and store it",
    openapi_extra=rules_extension(*CONFIG_RULES),
)
@documents_rules(*CONFIG_RULES)
async def run_backtest(
    body: BacktestRequest, request: Request, service: Service, jobs: Jobs
) -> Any:
    """Backtest a strategy on daily (or weekly/monthly) bars from the market service; store
    the run (config, metrics, input-bar hash, every fill) and return it.

    Orders decided at a bar's close fill at the next bar's open (`fill: "close"`: that
    close), with adverse `slippage` (fraction) and commission `commission` per share plus
    `commission_rate` of value (at least `min_commission`). Cash never goes negative:
    unaffordable orders are resized or rejected (counted). Open positions close at the
    last close. `symbols` (instead of `symbol`) trades one portfolio with shared cash and
    `max_positions`.

    `strategy` is a built-in or saved one by name (`{"name": "sma_crossover", "params":
    {"fast": 10}}`, `GET /strategies`) or inline rules in the strategy language:
    `{"rules": {"entry_long": ..., "exit_long": ..., "entry_short": ..., "exit_short": ...},
    "params": {"n": {"default": 14, "min": 2, "max": 50}}}`. A rule is a condition at a
    bar's close: `and or not`, `< <= > >= == !=`, `+ - * /`, numbers, `$params`, series
    `open high low close volume`, functions such as `sma(x, n)`, `rsi(x, n)`,
    `crosses_above(a, b)`, `lag(x, n)` (all: `GET /strategies/language`). Examples:
    `"entry_long": "rsi(close, $n) < 30 and close > sma(close, 200)", "exit_long":
    "rsi(close, $n) > 70"`; `"entry_long": "close > highest(lag(high, 1), 20)"`. A bad rule
    is a 422 naming the rule, line:column and the closest valid name. The run stores the
    exact rules and saved version it traded.

    `ml_ensemble` trades a predictor model version's daily calls (`strategy.params`:
    `model`, `version` (default: the active one), `min_confidence`, `on_uncertain`,
    `allow_short`): `up` long, `down` short or flat. The run stores the version it traded;
    its `notes` give the calls' hit rate against the naive baselines and warn when the
    dates overlap the version's training data.

    Answer: `run_id`; `metrics` as fractions (total_return, cagr, sharpe_ratio, sortino,
    calmar, max_drawdown (negative), win_rate, profit_factor, p_value of the mean return,
    probabilistic_sharpe_ratio, `final_capital`, ...); `benchmark` (buy-and-hold on the
    same bars and costs); a `trades` summary (fills: `GET /trades/{run_id}`); the `equity`
    curve (at most `equity_points` points); `notes` on how far to trust the numbers; links
    to the chart (`GET /results/{run_id}/chart.png`).

    Answers 200 directly (milliseconds of compute) unless `symbols` has more than 5
    instruments: then 202 and it runs as a job (`Location` is its status URL).
    """
    if service.runs.backtest_needs_job(body):
        prefix = _prefix(request)
        job = await jobs.submit("backtest", body, partial(_backtest_job, service, body, prefix))
        return accepted(request, job)
    return with_links(await service.runs.run_backtest(body), _prefix(request))


@router.post(
    "/walk_forward",
    operation_id="walk_forward",
    response_model=WalkForwardResult,
    responses={**accepted_responses(), **RUN_ERRORS},
    summary="Walk-forward analysis",
    openapi_extra=rules_extension(*WALK_FORWARD_RULES),
)
@documents_rules(*WALK_FORWARD_RULES)
async def run_walk_forward(
    body: WalkForwardRequest, request: Request, service: Service, jobs: Jobs
) -> Any:
    """Fit the strategy in sample and test it out of sample, window after window, on one
    `symbol`: `train_period` bars (default 252) then `test_period` bars (default 21), rolling
    forward by `test_period` (`anchored`: every train window starts at the first bar).
    N bars give (N - train - test) // test + 1 windows.

    In each window the `param_grid` combination best on `objective` over the train bars is
    traded on the test bars (no `param_grid`: the `strategy.params` as given). The strategy
    sees the train bars as history; the test windows trade as one run, a position staying
    open across a boundary while the next window holds the same side (`flat_at_boundary`:
    every window starts flat and closes what is open at its end).

    Answer: `n_windows`, per-window dates, fitted `params`, in-sample and out-of-sample
    metrics; the stitched out-of-sample `equity`, its `metrics` and `benchmark`
    (buy-and-hold on the same bars); `walk_forward_efficiency` = out-of-sample over
    in-sample annualised return (0.5 or more: the fit carries over); a one-line `reading`.

    With `ml_ensemble`, each window's model is trained by the predictor service on that
    window's train bars only (`strategy.params.training`: members, horizon, seed, LSTM
    size and epochs; a new version every `retrain_every` windows, the windows between
    trading the last one), its calls on the test bars are traded, and `ml` (overall) and
    each window's `ml` give the out-of-sample hit rate of the calls against the naive
    baselines (the majority class, yesterday's direction). Always a job (202), with
    progress per training and window.

    Every walk-forward is stored (config, input-bar hash, answer, the stitched out-of-sample
    equity), inline or as a job: `run_id` names it for `GET /results/{run_id}`, its
    `chart.png` and `POST /monte_carlo`. `notes` say when the bars do not reach an end of
    the dates asked.

    Answers 200 directly when windows x combinations x bars is at most 20,000,000
    trial-bars (about a second); otherwise 202 and runs as a job with progress per window.
    """
    prepared = await service.analyses.prepare_walk_forward(body)
    return await _start(request, service, jobs, prepared)


@router.post(
    "/optimize",
    operation_id="optimize_parameters",
    response_model=OptimizeResult,
    responses={**accepted_responses(), **RUN_ERRORS},
    summary="Parameter search with overfitting statistics",
    openapi_extra=rules_extension(*OPTIMIZE_RULES),
)
@documents_rules(*OPTIMIZE_RULES)
async def optimize_parameters(
    body: OptimizeRequest, request: Request, service: Service, jobs: Jobs
) -> Any:
    """Search a strategy's parameters on one `symbol`: every combination of `param_grid`
    (`method: "grid"`) or `n_trials` of them drawn with `seed` (`"random"`), filtered by
    `constraints` such as `"fast < slow"`, ranked by `objective` (any metric:
    sharpe_ratio, total_return, cagr, calmar_ratio, max_drawdown, ...).

    Answer: `n_trials`, the `top_n` combinations with their metrics, `best_params`, and,
    because many trials were tried, two questions on the excess-return Sharpe that ranks
    them, each in [0, 1]: is the best more than luck? the winner's `deflated_sharpe_ratio`
    (probability its Sharpe beats the best of `effective_trials` skill-less trials; >= 0.95
    is significant; its inputs in `deflated_sharpe`), and does picking the in-sample best
    help? `pbo`, the probability of backtest overfitting by combinatorially symmetric
    cross-validation (> 0.5: the parameter choice does not carry over), with a `reading`.

    `param_grid` may name any `$param` of a language strategy (inline or saved).

    Answers 200 directly when the whole cost, trials x bars plus 4 x C(S, S/2) CSCV splits
    x trials for the PBO, is at most 20,000,000 (e.g. 1,605 SMA pairs on ten years of daily
    bars with the default 10 blocks); otherwise 202 and runs as a job with progress per
    batch of trials. At most 60,000,000 trial-bars per search; a direct answer is stopped
    after `BACKTEST_DIRECT_TIMEOUT_S` (503 `direct_timeout`). Every search is stored:
    `run_id` names it for `GET /results/{run_id}`; `notes` say when the bars do not reach an
    end of the dates asked.
    """
    prepared = await service.analyses.prepare_optimize(body)
    return await _start(request, service, jobs, prepared)


@router.post(
    "/monte_carlo",
    operation_id="run_monte_carlo",
    response_model=MonteCarloResult,
    responses={**accepted_responses(), **RUN_ERRORS},
    summary="Monte Carlo of a run",
    openapi_extra=rules_extension(*MONTE_CARLO_RULES),
)
@documents_rules(*MONTE_CARLO_RULES)
async def run_monte_carlo(
    body: MonteCarloRequest, request: Request, service: Service, jobs: Jobs
) -> Any:
    """Resample a stored run (`run_id` of a backtest, or of a walk-forward: its stitched
    out-of-sample bar returns, block bootstrap only) or a new backtest (`config`, run and
    stored first)
    `n_runs` times (default 1,000) two ways, with `seed`: the trade-order bootstrap (its
    closed trades drawn with replacement) and the circular block bootstrap of its bar
    returns (`block` bars, default n^(1/3)).

    Answer per method: percentiles (p5..p95) of the final return and of the maximum
    drawdown, the probability of loss, VaR and CVaR at `confidence` (losses as positive
    fractions); the run's actual return and drawdown; a one-line `reading`.

    Answers 200 directly when n_runs x (bars + trades) is at most 20,000,000 path steps
    (1,000 runs of ten daily years take milliseconds); otherwise 202 and runs as a job.
    """
    prepared = await service.analyses.prepare_monte_carlo(body)
    return await _start(request, service, jobs, prepared)


@router.get(
    "/results",
    operation_id="list_results",
    response_model=RunList,
    responses=errors(401, 422, 503),
    summary="Stored backtests, walk-forwards and searches",
)
async def list_results(
    service: Service,
    kind: KindQuery = None,
    strategy: StrategyQuery = None,
    symbol: SymbolQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """List stored runs of every kind, newest first, optionally only one `kind`
    (backtest, walk_forward, optimization), one `strategy` or runs that traded `symbol`:
    run_id, kind, dates, capital, total_return, sharpe_ratio, max_drawdown, win_rate,
    total_trades (a search's are its winner's). `page` gives the total and the next
    `offset`."""
    async with service.reads.row_reads:
        build = await service.reads.list_results(
            kind=kind, strategy=strategy, symbol=symbol, limit=limit, offset=offset
        )
        return await answer_off_loop(build)


@router.get(
    "/results/{run_id}",
    operation_id="get_results",
    response_model=StoredResult,
    responses=READ_ERRORS,
    summary="One stored backtest, walk-forward or search",
)
async def get_results(
    run_id: RunId, request: Request, service: Service, equity_points: EquityPoints = 250
) -> Any:
    """Return a stored run exactly as it was answered; `kind` says which: `backtest` (as
    `run_backtest`: config, metrics, benchmark, trades summary, notes), `walk_forward` (as
    `walk_forward`, its stitched out-of-sample equity) or `optimization` (as
    `optimize_parameters`). Equity curves at most `equity_points` points."""
    result = await service.reads.get_any(run_id, equity_points=equity_points)
    return with_prefix(result, _prefix(request))


@router.delete(
    "/results/{run_id}",
    operation_id="delete_results",
    status_code=204,
    response_class=Response,
    responses=READ_ERRORS,
    summary="Delete a stored run",
)
async def delete_results(run_id: RunId, service: Service) -> Response:
    """Delete a stored run (with its fills), walk-forward or search; reads of it then
    answer 404."""
    await service.reads.delete_result(run_id)
    return Response(status_code=204)


@router.get(
    "/results/{run_id}/chart.png",
    operation_id="get_chart",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "A PNG image.",
        },
        **READ_ERRORS,
    },
    summary="Chart of a stored backtest or walk-forward (PNG)",
)
async def get_chart(
    run_id: RunId,
    service: Service,
    width: Annotated[int, Query(ge=300, le=2400, description="Pixels.")] = 1000,
    height: Annotated[int, Query(ge=200, le=1600, description="Pixels.")] = 600,
) -> Response:
    """Draw a stored run: its equity against buy-and-hold on top with buys (^) and sells (v)
    marked (at most 2,000 fills, evenly spread), both drawdowns below; a walk-forward's
    stitched out-of-sample equity against buy-and-hold on the same bars (a search has no
    chart: 404 `no_chart`). Returns a PNG image drawn at the nearest of a few sizes (widths
    400-2400, heights 200-1600 pixels)."""
    png = await service.reads.chart(run_id, width=width, height=height)
    return Response(content=png, media_type="image/png")


@router.get(
    "/trades/{run_id}",
    operation_id="get_trades",
    response_model=TradeList,
    responses=READ_ERRORS,
    summary="Fills of a stored backtest",
)
async def get_trades(
    run_id: RunId, service: Service, limit: Limit = 100, offset: Offset = 0
) -> Response:
    """Page through a stored run's fills, oldest first: timestamp, symbol, direction
    (buy/sell), shares, price (slippage included), commission, slippage_cost, total_cost,
    pnl (realised, on closing fills), portfolio_value, reason (signal, stop_loss,
    take_profit, end) and trade_return. `page` gives the total and the next `offset`."""
    return await answer_off_loop(await service.reads.get_trades(run_id, limit=limit, offset=offset))
