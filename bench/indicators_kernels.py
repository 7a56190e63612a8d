"""Benchmark the numba indicator kernels against TA-Lib.

Two inputs:

* ``2520`` bars (about ten years of daily bars): the last 2,520 rows of ``AAPL.csv``.
* any larger size (default 1,000,000 bars): a synthetic but deterministic series built by
  resampling whole AAPL days with ``numpy.random.default_rng(SYNTH_SEED)``. For each drawn day
  ``j`` the close moves by AAPL's real log-return ``log(close[j] / close[j-1])`` and that
  day's high and low are placed at their real ratios ``high[j] / close[j]`` and
  ``low[j] / close[j]`` around the new close. The walk starts from AAPL's last close, so the
  series has AAPL's return distribution and intraday ranges but no calendar structure.

Times are medians over ``repeats`` calls of the bare kernel (``*_nb``) and of the ``talib``
function with the same parameters, after a warm-up call of each (numba's JIT compile and
cache load are excluded). ``max_abs_diff`` is the largest absolute difference between the
two over every output, a sanity check that the two compute the same thing at that size.

Run ``python bench/indicators_kernels.py`` to print the table; import ``run_kernel_bench``
to get the rows. Importing this module prints nothing and does not import ``talib``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # allow `python bench/indicators_kernels.py`
    sys.path.insert(0, str(_REPO_ROOT))

from shared.quant import INDICATORS, compute  # noqa: E402
from shared.quant import kernels as nb  # noqa: E402

DATA_DIR = _REPO_ROOT.parent / "shared" / "data" / "ohlcv" / "daily"
REAL_BARS = 2520
SYNTH_SEED = 20_240_101


def load_ohlc(symbol: str = "AAPL") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load a symbol's daily high, low and close as float64 arrays."""
    import pandas as pd

    frame = pd.read_csv(DATA_DIR / f"{symbol}.csv", usecols=["high", "low", "close"])
    return tuple(np.ascontiguousarray(frame[c], dtype=np.float64) for c in ("high", "low", "close"))


def synthetic_ohlc(
    n: int, seed: int = SYNTH_SEED, symbol: str = "AAPL"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build an n-bar geometric random walk by resampling a symbol's real days."""
    high, low, close = load_ohlc(symbol)
    log_ret = np.log(close[1:] / close[:-1])
    high_ratio = high[1:] / close[1:]
    low_ratio = low[1:] / close[1:]
    days = np.random.default_rng(seed).integers(0, log_ret.shape[0], size=n)
    steps = log_ret[days]
    steps -= steps.mean()  # driftless bridge: AAPL's +0.12%/day drift would overflow at 1M bars
    synth_close = close[-1] * np.exp(np.cumsum(steps))
    synth_high = synth_close * high_ratio[days]
    synth_low = synth_close * low_ratio[days]
    return synth_high, synth_low, synth_close


def bench_inputs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the (high, low, close) used for an n-bar run."""
    if n <= REAL_BARS:
        high, low, close = load_ohlc()
        return high[-n:].copy(), low[-n:].copy(), close[-n:].copy()
    return synthetic_ohlc(n)


def _cases(talib) -> list[tuple[str, dict, Callable, Callable]]:
    """Return (indicator, params, kernel, talib call) with default parameters."""
    return [
        ("rsi", {}, lambda h, lo, c: nb.rsi_nb(c, 14), lambda h, lo, c: talib.RSI(c, 14)),
        (
            "macd",
            {},
            lambda h, lo, c: nb.macd_nb(c, 12, 26, 9),
            lambda h, lo, c: talib.MACD(c, 12, 26, 9),
        ),
        (
            "bbands",
            {},
            lambda h, lo, c: nb.bbands_nb(c, 20, 2.0, 2.0),
            lambda h, lo, c: talib.BBANDS(c, 20, 2.0, 2.0, 0),
        ),
        (
            "williams_r",
            {},
            lambda h, lo, c: nb.willr_nb(h, lo, c, 14),
            lambda h, lo, c: talib.WILLR(h, lo, c, 14),
        ),
        (
            "stochastic",
            {},
            lambda h, lo, c: nb.stoch_nb(h, lo, c, 14, 3, 3),
            lambda h, lo, c: talib.STOCH(h, lo, c, 14, 3, 0, 3, 0),
        ),
        ("sma", {}, lambda h, lo, c: nb.sma_nb(c, 30), lambda h, lo, c: talib.SMA(c, 30)),
        ("ema", {}, lambda h, lo, c: nb.ema_nb(c, 30), lambda h, lo, c: talib.EMA(c, 30)),
        (
            "atr",
            {},
            lambda h, lo, c: nb.atr_nb(h, lo, c, 14),
            lambda h, lo, c: talib.ATR(h, lo, c, 14),
        ),
    ]


def _median_seconds(fn: Callable, args: tuple, repeats: int) -> float:
    """Return the median wall time of ``fn(*args)`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn(*args)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e9


def _max_diff(ours, theirs) -> float:
    """Return max |a - b| / max(1, |b|) over all outputs; inf if the NaN positions differ."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        mask = ~np.isnan(a)
        if mask.any():
            err = np.abs(a[mask] - b[mask]) / np.maximum(1.0, np.abs(b[mask]))
            worst = max(worst, float(np.max(err)))
    return worst


def run_kernel_bench(
    sizes: Sequence[int] = (REAL_BARS, 1_000_000), repeats: int | None = None
) -> list[dict]:
    """Time each indicator against TA-Lib per size; return one row per (indicator, size).

    ``ours_s`` is the service path, ``shared.quant.compute`` (parameter validation, numpy-allocated
    outputs, ``*_into_nb`` kernel); ``kernel_s`` is the bare ``*_nb`` kernel, whose outputs
    numba allocates; ``ratio`` is ``ours_s / talib_s``; ``max_diff`` compares ``compute`` with
    TA-Lib as max |ours - talib| / max(1, |talib|) over every output.
    """
    import talib

    rows = []
    for n in sizes:
        high, low, close = bench_inputs(n)
        reps = repeats if repeats is not None else max(7, min(301, 2_000_000 // n))
        for name, params, kernel, theirs in _cases(talib):
            args = (high, low, close)
            spec = INDICATORS[name]

            def ours(h, lo, c, name=name, params=params):
                return compute(name, params, high=h, low=lo, close=c)

            got = ours(*args)  # also loads the JIT cache
            diff = _max_diff(tuple(got[k] for k in spec.outputs), theirs(*args))
            kernel(*args)
            t_ours = _median_seconds(ours, args, reps)
            t_kernel = _median_seconds(kernel, args, reps)
            t_talib = _median_seconds(theirs, args, reps)
            rows.append(
                {
                    "indicator": name,
                    "bars": n,
                    "ours_s": t_ours,
                    "kernel_s": t_kernel,
                    "talib_s": t_talib,
                    "ratio": t_ours / t_talib if t_talib > 0 else float("inf"),
                    "max_diff": diff,
                    "repeats": reps,
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    """Render bench rows as a fixed-width text table."""
    head = (
        f"{'indicator':<11} {'bars':>9} {'ours':>11} {'kernel':>11} {'talib':>11} "
        f"{'ratio':>6} {'max diff':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['indicator']:<11} {r['bars']:>9,} {r['ours_s'] * 1e3:>9.3f}ms "
            f"{r['kernel_s'] * 1e3:>9.3f}ms {r['talib_s'] * 1e3:>9.3f}ms "
            f"{r['ratio']:>6.2f} {r['max_diff']:>9.1e}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(run_kernel_bench()))
