"""Monte Carlo of a run: trade-order bootstrap and block bootstrap of its bar returns.

Runs are drawn in chunks of `CHUNK_RUNS` (chunk i seeded `seed + i`), so a job can report
progress per chunk and the answer depends only on the request, never on where it ran.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.backtest.engine.analysis import Distribution as Draws
from services.backtest.engine.analysis import monte_carlo
from services.backtest.metrics import drawdowns
from services.backtest.optimize import Runner
from services.backtest.schemas import (
    Distribution,
    MonteCarloRequest,
    MonteCarloResult,
    Percentiles,
    finite,
)

CHUNK_RUNS = 10_000


@dataclass(frozen=True)
class Source:
    """What is resampled: a run's bar returns and its trades' returns."""

    run_id: uuid.UUID
    returns: np.ndarray
    trade_returns: np.ndarray
    total_return: float | None
    max_drawdown: float | None
    kind: str = "backtest"  # or walk_forward: its stitched returns, no trades stored


@dataclass(frozen=True)
class Chunk:
    """One chunk of resampled paths (a task)."""

    source: Source
    n_runs: int
    seed: int
    block: int
    confidence: float


def default_block(n_bars: int) -> int:
    """Return the usual block length for n bars: n^(1/3), at least 1."""
    return max(1, round(n_bars ** (1.0 / 3.0)))


def steps(source: Source, n_runs: int) -> int:
    """Return the path steps a Monte Carlo of n_runs takes (decides job or not)."""
    return n_runs * (source.returns.size + source.trade_returns.size)


def run_chunk(chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (trade finals, trade drawdowns, block finals, block drawdowns) of one chunk."""
    res = monte_carlo(
        chunk.source.trade_returns,
        chunk.source.returns,
        n_runs=chunk.n_runs,
        block=chunk.block,
        seed=chunk.seed,
        confidence=chunk.confidence,
    )
    return (
        res.trades.final_return,
        res.trades.max_drawdown,
        res.blocks.final_return,
        res.blocks.max_drawdown,
    )


def trade_max_drawdown(trade_returns: np.ndarray) -> float | None:
    """Return the worst drawdown of the trades compounded in their order (trade to trade)."""
    if not trade_returns.size:
        return None
    return drawdowns(np.cumprod(1.0 + trade_returns), 1.0).max_drawdown


def _distribution(draws: Draws, resolution: Literal["trade", "bar"]) -> Distribution:
    s = draws.summary()
    final, mdd = s["final_return"], s["max_drawdown"]
    assert isinstance(final, dict) and isinstance(mdd, dict)
    return Distribution(
        final_return=Percentiles(**final),
        max_drawdown=Percentiles(**mdd),
        drawdown_resolution=resolution,
        probability_of_loss=float(s["probability_of_loss"]),  # type: ignore[arg-type]
        var=float(s["var"]),  # type: ignore[arg-type]
        cvar=float(s["cvar"]),  # type: ignore[arg-type]
    )


async def resample(request: MonteCarloRequest, source: Source, runner: Runner) -> MonteCarloResult:
    """Resample the source's trades and returns n_runs times each; summarise both."""
    block = request.block or default_block(source.returns.size)
    chunks = [
        Chunk(
            source=source,
            n_runs=min(CHUNK_RUNS, request.n_runs - start),
            seed=(request.seed + i) % 2**32,
            block=block,
            confidence=request.confidence,
        )
        for i, start in enumerate(range(0, request.n_runs, CHUNK_RUNS))
    ]
    what = "paths" if len(chunks) == 1 else f"chunks of {CHUNK_RUNS:,} paths"
    parts = await runner.map(run_chunk, chunks, where="thread", what=what)
    trade_final, trade_mdd, block_final, block_mdd = (
        np.concatenate([p[k] for p in parts]) for k in range(4)
    )
    blocks = _distribution(Draws(block_final, block_mdd, request.confidence), "bar")
    trades = None
    trade_mdd_actual = trade_max_drawdown(source.trade_returns)
    if source.trade_returns.size:
        trades = _distribution(Draws(trade_final, trade_mdd, request.confidence), "trade")
    b = blocks
    tail = (
        f"the worst {1 - request.confidence:.0%} of paths lose more than {b.var:.1%} (VaR)"
        if b.var > 0
        else f"even the worst {1 - request.confidence:.0%} of paths gain {-b.var:.1%} or more"
    )
    reading = (
        f"Across {request.n_runs:,} block-bootstrap paths the median final return is "
        f"{b.final_return.p50:.1%} (5%-95%: {b.final_return.p5:.1%} to {b.final_return.p95:.1%}), "
        f"{b.probability_of_loss:.0%} of paths lose money, the median worst drawdown is "
        f"{b.max_drawdown.p50:.1%} bar to bar (the run's own: {_pct(source.max_drawdown)}), "
        f"and {tail}."
    )
    if trades is None and source.kind == "walk_forward":
        reading += (
            " A walk-forward keeps its stitched out-of-sample bar returns, not its trades: "
            "block bootstrap only."
        )
    elif trades is None:
        reading += " The run closed no trade, so there is no trade-order bootstrap."
    else:
        reading += (
            f" Trade-order paths mark equity only when a trade closes: their median worst "
            f"drawdown {trades.max_drawdown.p50:.1%} compares with the run's trade-to-trade "
            f"{_pct(trade_mdd_actual)}, not with its bar-to-bar drawdown."
        )
    return MonteCarloResult(
        run_id=source.run_id,
        n_runs=request.n_runs,
        seed=request.seed,
        block=block,
        confidence=request.confidence,
        n_trades=int(source.trade_returns.size),
        actual_total_return=finite(source.total_return),
        actual_max_drawdown=finite(source.max_drawdown),
        actual_trade_max_drawdown=finite(trade_mdd_actual),
        trade_bootstrap=trades,
        block_bootstrap=blocks,
        reading=reading,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"
