"""HTTP routes of the portfolio service: parse, call the service, return a schema.

Route docstrings become the MCP tool descriptions. Orders are paper orders: the embedded
paper broker fills them at the next session's open from the market service's prices.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from services.portfolio.schemas import (
    Account,
    AccountCreate,
    Deployment,
    DeploymentCreate,
    Drift,
    FillList,
    OrderList,
    Risk,
    RunRequest,
    RunResult,
)
from services.portfolio.service import PortfolioService
from shared.api import Limit, Offset, ProblemDocs
from shared.jobs import JOBS, JobContext, JobRunner, accepted, accepted_responses
from shared.rules import CrossFieldRule, documents_rules, rules_extension
from shared.state import Slot

router = APIRouter()

errors = ProblemDocs(
    {
        404: "The account or deployment does not exist (or a symbol the market lacks).",
        409: "The deployment is stopped; the account's broker is not configured (Alpaca keys, "
        "live switch; `detail` says what to do) or its Alpaca account is already open; an "
        "alpaca account asked to replay the past.",
        422: "An input is invalid (`field` names it): an unknown strategy or parameter (the "
        "backtest service's verdict), `until` before the start, the alpaca broker.",
        502: "The market or backtest service failed.",
        503: "The database, the market or the backtest service is unavailable.",
    }
)
READ = errors(401, 404, 422, 503)
WRITE = errors(400, 401, 404, 409, 422, 502, 503)
# MCP tool annotations (the gateway reads `x-mcp-annotations`): orders, halts and stops
# change the book; every GET is read-only.
DESTRUCTIVE = {"x-mcp-annotations": {"readOnlyHint": False, "destructiveHint": True}}
WRITES = {"x-mcp-annotations": {"readOnlyHint": False, "destructiveHint": False}}
READS = {"x-mcp-annotations": {"readOnlyHint": True, "idempotentHint": True}}
# Rules a JSON schema cannot state (listed in the descriptions and x-cross-field-rules).
DEPLOY_RULES = (
    CrossFieldRule(("symbols",), "each of `symbols` once (case-insensitive)"),
    CrossFieldRule(
        ("strategy", "start_date", "symbols"),
        "the backtest service runs `strategy` (`backtest_list_strategies`: names and "
        "parameter rules) on `symbols`, which the market service knows",
    ),
)
RUN_RULES = (CrossFieldRule(("until",), "`until` is after the deployment's `start_date`"),)
AccountId = Annotated[uuid.UUID, Path(description="The account's id.")]
DeploymentId = Annotated[uuid.UUID, Path(description="The deployment's id.")]


# The app's PortfolioService, built in its lifespan.
PORTFOLIO = Slot("portfolio", PortfolioService)
Service = Annotated[PortfolioService, Depends(PORTFOLIO)]
Jobs = Annotated[JobRunner, Depends(JOBS)]


@router.post(
    "/accounts",
    operation_id="create_account",
    openapi_extra=WRITES,
    response_model=Account,
    status_code=201,
    responses=WRITE,
    summary="Open a paper account",
)
async def create_account(body: AccountCreate, service: Service) -> Account:
    """Open an account holding `initial_cash` on the `paper` broker (simulated orders; no
    money moves). Returns its id, cash, equity (= cash), no positions. `broker: "alpaca"`
    opens the one account on Alpaca's paper account of the server's stored keys: its cash
    and positions are the broker's (409 when keys are missing or it is already open)."""
    return await service.create_account(body)


@router.get(
    "/accounts/{account_id}",
    operation_id="get_account",
    openapi_extra=READS,
    response_model=Account,
    responses=READ,
    summary="An account's cash, positions and pnl",
)
async def get_account(account_id: AccountId, service: Service) -> Account:
    """Return cash, equity, positions (quantity, average_price, market_value at the latest
    close processed, unrealised_pnl), realised_pnl, gross exposure (a fraction of equity)
    and whether the kill switch is on."""
    return await service.get_account(account_id)


@router.post(
    "/accounts/{account_id}/halt",
    operation_id="halt_account",
    openapi_extra=DESTRUCTIVE,
    response_model=Account,
    responses=WRITE,
    summary="Kill switch: refuse every order",
)
async def halt_account(account_id: AccountId, service: Service) -> Account:
    """Turn the account's kill switch on: the risk manager refuses every order of its
    deployments (stored as `refused` with the reason) until `resume_account`."""
    return await service.halt(account_id)


@router.post(
    "/accounts/{account_id}/resume",
    operation_id="resume_account",
    openapi_extra=DESTRUCTIVE,
    response_model=Account,
    responses=WRITE,
    summary="Lift the kill switch and drawdown halts",
)
async def resume_account(account_id: AccountId, service: Service) -> Account:
    """Turn the kill switch off and lift the drawdown halts of the account's deployments."""
    return await service.resume(account_id)


@router.get(
    "/accounts/{account_id}/orders",
    operation_id="list_orders",
    openapi_extra=READS,
    response_model=OrderList,
    responses=READ,
    summary="An account's orders",
)
async def list_orders(
    account_id: AccountId, service: Service, limit: Limit = 100, offset: Offset = 0
) -> OrderList:
    """Page through the account's orders, oldest first: client_order_id (deterministic),
    session, symbol, side, quantity sent, quantity requested by the sizing, status
    (`filled`, `refused` by the risk manager, `rejected` by the broker, `new` not sent yet)
    and the reason of a refusal or a cut."""
    return await service.list_orders(account_id, limit=limit, offset=offset)


@router.get(
    "/accounts/{account_id}/fills",
    operation_id="list_fills",
    openapi_extra=READS,
    response_model=FillList,
    responses=READ,
    summary="An account's fills",
)
async def list_fills(
    account_id: AccountId, service: Service, limit: Limit = 100, offset: Offset = 0
) -> FillList:
    """Page through the account's fills, oldest first, in the backtest's fill fields:
    timestamp (the session), symbol, direction, shares, price (slippage included),
    commission, slippage_cost, total_cost, pnl (closing fills)."""
    return await service.list_fills(account_id, limit=limit, offset=offset)


@router.get(
    "/accounts/{account_id}/risk",
    operation_id="get_risk",
    openapi_extra=READS,
    response_model=Risk,
    responses=errors(401, 404, 422, 502, 503),
    summary="The book's risk and the breakers",
)
async def get_risk(account_id: AccountId, service: Service) -> Risk:
    """Return exposure by symbol (fractions of equity), the historical one-day 95% VaR and
    CVaR of the current book in cash (from up to a year of the held symbols' daily returns;
    null under 20), the correlation of the held symbols, the drawdown from the equity peak
    and the breakers (kill switch, halted deployments, orders of the last session)."""
    return await service.risk(account_id)


@router.post(
    "/deployments",
    operation_id="create_deployment",
    openapi_extra={**WRITES, **rules_extension(*DEPLOY_RULES)},
    response_model=Deployment,
    status_code=201,
    responses=WRITE,
    summary="Deploy a strategy on a paper account",
)
@documents_rules(*DEPLOY_RULES)
async def create_deployment(body: DeploymentCreate, service: Service) -> Deployment:
    """Deploy a strategy (as `POST /backtest` takes it; the backtest service validates it)
    on `symbols` of an account from `start_date`, with the backtest's sizing and cost
    fields and the risk limits. Nothing trades until `run_deployment`."""
    return await service.create_deployment(body)


@router.get(
    "/deployments/{deployment_id}",
    operation_id="get_deployment",
    openapi_extra=READS,
    response_model=Deployment,
    responses=READ,
    summary="A deployment's state",
)
async def get_deployment(deployment_id: DeploymentId, service: Service) -> Deployment:
    """Return the deployment's config, status, last session processed, the wishes pending
    for the next open and any drawdown halt."""
    return await service.get_deployment(deployment_id)


@router.delete(
    "/deployments/{deployment_id}",
    operation_id="stop_deployment",
    openapi_extra=DESTRUCTIVE,
    response_model=Deployment,
    responses=WRITE,
    summary="Stop a deployment",
)
async def stop_deployment(deployment_id: DeploymentId, service: Service) -> Deployment:
    """Stop the deployment: it decides no more orders; its positions stay in the account."""
    return await service.stop_deployment(deployment_id)


async def _run_job(
    service: PortfolioService, deployment_id: uuid.UUID, body: RunRequest, ctx: JobContext
) -> dict[str, Any]:
    ctx.report(0, 1, "processing sessions")
    result = await service.run(deployment_id, body.until)
    ctx.report(1, 1, f"{result.sessions} sessions processed")
    return result.model_dump(mode="json")


@router.post(
    "/deployments/{deployment_id}/run",
    operation_id="run_deployment",
    openapi_extra={**DESTRUCTIVE, **rules_extension(*RUN_RULES)},
    response_model=RunResult,
    responses={**accepted_responses(), **WRITE},
    summary="Trade every session up to a date",
)
@documents_rules(*RUN_RULES)
async def run_deployment(
    deployment_id: DeploymentId, body: RunRequest, request: Request, service: Service, jobs: Jobs
) -> Any:
    """Process every exchange session from the last processed one up to `until`: at each
    open the wishes decided at the previous close become orders (past the risk manager)
    filled by the paper broker; at each close the strategy's wish (the backtest's
    `get_signals`) is read. A date in the past replays history, the same fills as a
    backtest of the same config (but for the backtest's closing fill at its end).

    On an `alpaca` account only the latest closed session trades (its orders go to Alpaca
    as market orders for the next open; the next run books their fills): an `until` before
    it is a replay, refused with 409 `replay_not_supported`.

    Answers 200 with what was processed, or 202 and runs as a job (`Location` is its status
    URL) when more than `PORTFOLIO_RUN_JOB_SESSIONS` weekdays (600 by default, a little
    over two years) are left to process."""
    limit = service.settings.portfolio_run_job_sessions
    if await service.sessions_to_run(deployment_id, body.until) > limit:
        job = await jobs.submit(
            "run_deployment",
            {"deployment_id": str(deployment_id), **body.model_dump(mode="json")},
            partial(_run_job, service, deployment_id, body),
        )
        return accepted(request, job)
    return await service.run(deployment_id, body.until)


@router.get(
    "/deployments/{deployment_id}/drift",
    operation_id="get_drift",
    openapi_extra=READS,
    response_model=Drift,
    responses=errors(401, 404, 409, 422, 502, 503),
    summary="Paper record against the backtest",
)
async def get_drift(deployment_id: DeploymentId, service: Service) -> Drift:
    """Compare the deployment's paper record with `POST /backtest` of the same config over
    its processed sessions: tracking error of the daily returns (annualised), the largest
    equity gap, the fills that differ (first 50; the backtest's closing fill at its end is
    left out) and the costs paid beside the costs modelled. Runs a stored backtest."""
    return await service.drift(deployment_id)
