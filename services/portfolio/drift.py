"""Drift: a deployment's paper record beside a backtest of the same config on the same sessions.

Pure comparison (the service fetches both sides): tracking error of the daily returns,
the fills that differ (the backtest's closing fill at its end left out: a deployment holds),
and the costs paid beside the costs the backtest modelled.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np

from services.portfolio.schemas import Drift, FillDiff

MAX_DIFFS = 50


def _key(f: dict[str, Any]) -> tuple[str, str, str]:
    return (str(f["timestamp"])[:10], f["symbol"], f["direction"])


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(
        a["shares"] == b["shares"]
        and math.isclose(a["price"], b["price"], rel_tol=1e-9)
        and math.isclose(a["commission"], b["commission"], rel_tol=1e-9, abs_tol=1e-9)
    )


def compare(
    *,
    paper_fills: list[dict[str, Any]],
    backtest_fills: list[dict[str, Any]],
    paper_equity: dict[date, float],
    backtest_equity: dict[date, float],
    run_id: str,
) -> Drift:
    """Return the drift between a paper record and a backtest of the same config."""
    modelled = [f for f in backtest_fills if f.get("reason") != "end"]
    ours = {_key(f): f for f in paper_fills}
    theirs = {_key(f): f for f in modelled}
    diffs: list[FillDiff] = []
    differing = 0
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)
        if a is not None and b is not None and _same(a, b):
            continue
        differing += 1
        if len(diffs) < MAX_DIFFS:
            diffs.append(
                FillDiff(
                    session=date.fromisoformat(k[0]),
                    symbol=k[1],
                    direction=k[2],  # type: ignore[arg-type]
                    paper_shares=a["shares"] if a else None,
                    paper_price=a["price"] if a else None,
                    backtest_shares=b["shares"] if b else None,
                    backtest_price=b["price"] if b else None,
                )
            )
    days = sorted(set(paper_equity) & set(backtest_equity))
    te = gap = None
    if len(days) >= 3:
        p = np.array([paper_equity[d] for d in days])
        q = np.array([backtest_equity[d] for d in days])
        diff = np.diff(p) / p[:-1] - np.diff(q) / q[:-1]
        te = float(np.std(diff, ddof=1) * math.sqrt(252.0))
        gap = float(np.max(np.abs(p / q - 1.0)))
    return Drift(
        run_id=run_id,
        sessions=len(days),
        tracking_error=te,
        max_equity_gap=gap,
        fills_compared=len(set(ours) | set(theirs)),
        fills_differing=differing,
        differences=diffs,
        realised_costs=sum(f["commission"] + f["slippage_cost"] for f in paper_fills),
        modelled_costs=sum(f["commission"] + f["slippage_cost"] for f in modelled),
    )
