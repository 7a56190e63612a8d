"""The portfolio's reports: a deployment's drift from the backtest, an account's risk.

Read-only: each reads the service's tables and asks its peers (a backtest of the same
config, the held symbols' prices); nothing here changes the book.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np

from services.portfolio import repository as repo
from services.portfolio.drift import compare
from services.portfolio.execution import Config
from services.portfolio.orders import account_row, deployment_row
from services.portfolio.repository import aware
from services.portfolio.schemas import Breakers, Drift, Risk
from shared.errors import AppError

if TYPE_CHECKING:
    from services.portfolio.service import PortfolioService


class NothingToCompareError(AppError):
    """The deployment has not processed enough sessions for a comparison (a state, not input)."""

    status = 409
    code = "insufficient_data"
    title = "Not enough sessions"


async def drift_of(service: PortfolioService, deployment_id: uuid.UUID) -> Drift:
    """Compare the deployment's record with `POST /backtest` of its config on its sessions."""
    async with service.db.session() as s:
        dep = await deployment_row(s, deployment_id)
        account = await account_row(s, dep["account_id"])
        paper = await repo.deployment_fills(s, deployment_id=deployment_id)
        history = await repo.equity_history(s, account_id=dep["account_id"])
    last: date | None = dep["last_session"]
    c = dep["config"]
    cfg = Config.parse(c)
    if last is None or last <= cfg.start_date:
        raise NothingToCompareError(
            "The deployment has not processed two sessions yet: run it first "
            "(POST /deployments/{id}/run)."
        )
    body = {
        **cfg.signals_request(last),
        **c["costs"],
        "position_size": c["position_size"],
        "max_positions": c["max_positions"],
        "fractional_shares": c["fractional_shares"],
        "initial_capital": account["initial_cash"],
        "equity_points": 20_000,
    }
    result, theirs = await service.peers.backtest_run(body)
    curve = result["equity"]
    backtest_equity = {
        date.fromisoformat(str(t)[:10]): float(v)
        for t, v in zip(curve["timestamps"], curve["equity"], strict=True)
    }
    ours = [{**f, "timestamp": aware(f["timestamp"]).isoformat()} for f in paper]
    return compare(
        paper_fills=ours,
        backtest_fills=theirs,
        paper_equity={h["session"]: h["equity"] for h in history},
        backtest_equity=backtest_equity,
        run_id=str(result["run_id"]),
    )


async def risk_of(service: PortfolioService, account_id: uuid.UUID) -> Risk:
    """Return exposure by symbol, historical VaR/CVaR, correlation, drawdown, breakers."""
    account = await service.get_account(account_id)
    async with service.db.session() as s:
        history = await repo.equity_history(s, account_id=account_id)
        deps = await repo.deployments_of(s, account_id=account_id)
        last = history[-1]["session"] if history else None
        n_orders = await repo.count_orders(s, account_id=account_id, day=last) if last else 0
    eq = account.equity
    peak = max([account.initial_cash, *(h["equity"] for h in history)])
    held = [p for p in account.positions if p.quantity != 0]
    returns: dict[str, np.ndarray] = {}
    if held and last is not None:
        start = last - timedelta(days=int(service.settings.portfolio_var_window * 1.5) + 10)
        got = await asyncio.gather(*(service.peers.prices(p.symbol, start, last) for p in held))
        common = sorted(set.intersection(*(set(g.close) for g in got)))
        common = common[-(service.settings.portfolio_var_window + 1) :]
        for p, g in zip(held, got, strict=True):
            closes = np.array([g.close[d] for d in common])
            returns[p.symbol] = np.diff(closes) / closes[:-1]
    var = cvar = None
    obs = min((len(r) for r in returns.values()), default=0)
    corr: dict[str, dict[str, float | None]] = {}
    if obs >= 20:
        pnl = sum(p.market_value * returns[p.symbol] for p in held)
        assert isinstance(pnl, np.ndarray)
        q = float(np.quantile(pnl, 0.05))
        var = -q
        cvar = -float(pnl[pnl <= q].mean())
        for a in held:
            corr[a.symbol] = {}
            for b in held:
                c = np.corrcoef(returns[a.symbol], returns[b.symbol])[0, 1]
                corr[a.symbol][b.symbol] = float(c) if np.isfinite(c) else None
    return Risk(
        account_id=account_id,
        equity=eq,
        exposure_by_symbol={p.symbol: p.market_value / eq if eq else 0.0 for p in held},
        gross_exposure=account.exposure,
        var_95=var,
        cvar_95=cvar,
        observations=obs,
        correlation=corr,
        drawdown=max(0.0, (peak - eq) / peak) if peak > 0 else 0.0,
        peak_equity=peak,
        breakers=Breakers(
            kill_switch=account.halted,
            kill_reason=account.halt_reason,
            halted_deployments={str(d["id"]): d["halt_reason"] for d in deps if d["halt_reason"]},
            orders_last_session=n_orders,
            last_session=last,
        ),
    )
