"""The chart of a stored run: equity against buy-and-hold, trades marked, drawdown below.

matplotlib is imported lazily (only a process that draws pays for it) and used through its
object API with the Agg canvas: no pyplot, no global state, safe in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def _drawdown(equity: np.ndarray) -> np.ndarray:
    """Return equity over its running peak, less one (0 at a peak, negative below)."""
    peak = np.maximum.accumulate(equity)
    return np.divide(equity, peak, out=np.zeros_like(equity), where=peak > 0) - 1.0


def render_chart(
    *,
    dates: np.ndarray,
    equity: np.ndarray,
    benchmark: np.ndarray,
    fill_dates: Sequence[np.datetime64],
    fill_directions: Sequence[str],
    title: str,
    width: int = 1000,
    height: int = 600,
    dpi: int = 100,
) -> bytes:
    """Return a PNG: equity and buy-and-hold on top (buys ^, sells v), drawdowns below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    x = dates.astype("datetime64[D]").astype("datetime64[ms]").astype(object)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot(x, equity, color="#1f5fa8", linewidth=1.3, label="strategy")
    top.plot(x, benchmark, color="#8c8c8c", linewidth=1.0, label="buy and hold")
    if len(fill_dates):
        index = {d: i for i, d in enumerate(dates.astype("datetime64[D]"))}
        at = [index.get(d) for d in np.asarray(fill_dates, dtype="datetime64[D]")]
        for side, marker, color in (("buy", "^", "#1a9641"), ("sell", "v", "#d7191c")):
            rows = [
                i for i, s in zip(at, fill_directions, strict=True) if s == side and i is not None
            ]
            if rows:
                top.scatter(
                    [x[i] for i in rows],
                    equity[rows],
                    marker=marker,
                    color=color,
                    s=22,
                    zorder=3,
                    label=side,
                )
    top.set_title(title, fontsize=11)
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.fill_between(x, _drawdown(equity), 0.0, color="#d7191c", alpha=0.35, label="strategy")
    bottom.plot(x, _drawdown(benchmark), color="#8c8c8c", linewidth=0.8, label="buy and hold")
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bottom.grid(alpha=0.3)
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
