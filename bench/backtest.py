"""Benchmark the backtest engine beside backtesting.py and vectorbt on the same bars.

Bars: the last 2,520 rows (ten years) of ``AAPL.csv``. Strategy: SMA 10/30 crossover, long
and short, next-open fills, whole shares, 0.2% commission (backtesting.py's ``SmaCross``).

1. One backtest. ``engine kernel`` is ``core.simulate_nb`` with its fill log, targets given;
   ``engine end to end`` adds the SMAs, the crossover targets and the Python wrapper;
   ``sweep kernel`` is the register-only single-symbol kernel the sweeps run. Peers:
   ``Backtest.run`` and vectorbt's ``Portfolio.from_signals`` (signals at the close, as
   vectorbt does). Final equity is printed beside each time.
2. The SMA sweep fast 5..50 (step 1) x slow 10..200 (step 5), fast < slow: 1,605 backtests.
   The engine computes each distinct SMA once and runs the trials in ``prange``, with
   and without the per-block return sums ``/optimize`` keeps for the DSR and the PBO;
   backtesting.py's ``optimize`` runs a sample of the grid (its rate is per backtest);
   vectorbt broadcasts the whole grid in one ``from_signals``.
5. (``language``) The same SMA 10/30 rule written in the strategy language (``crosses_above``
   / ``crosses_below`` of two ``sma``s, four rules) beside the native ``sma_crossover``: one
   backtest end to end (targets and the engine, ``config.simulate_config``) and the 1,605-trial
   sweep as ``/optimize`` runs it (``optimize.run_batch`` with CSCV block sums): each SMA
   computed once per window, then every trial's rules run as a postfix program in the
   engine's ``prange`` beside its simulation (``language.batch``). Targets: one backtest
   within 2x of native, the sweep at >= 50,000 trials/s.
3. A 1,000-run Monte Carlo (trade-order bootstrap and block bootstrap of daily returns).
4. The same work through the backtest service's HTTP API: the market and backtest services
   co-hosted (``trading.host.build_platform_app``) under uvicorn on localhost, embedded
   SQLite, bars from the CSV provider. A warm ``POST /backtest`` (bars cached; repeated, and
   with new parameters each call), ``POST /optimize`` of the sweep above (its answer
   includes the Deflated Sharpe Ratio and the PBO, which need every trial's returns) in
   backtests per second, and ``POST /monte_carlo`` of 1,000 runs on a stored run.

Times are the best of repeated calls after a warm-up call (numba compile and cache load
excluded). The machine is shared: the run starts with the load average and a calibration
(a bare numba loop, 7 us on a quiet machine) so the reader can judge how busy it was, and
ends with the load average again. Run ``python bench/backtest.py`` (every section) or name
sections (``single sweep monte_carlo http``); nothing is asserted.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # allow `python bench/backtest.py`
    sys.path.insert(0, str(_REPO_ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bars

from services.backtest.engine import core  # noqa: E402
from services.backtest.engine.analysis import monte_carlo, sma_pairs, sweep_crossover  # noqa: E402
from services.backtest.engine.fast import N_STATS, simulate_one_nb  # noqa: E402
from services.backtest.engine.runner import Bars, make_spec, simulate  # noqa: E402
from services.backtest.engine.signals import crossover_target_nb  # noqa: E402
from shared.quant.kernels import sma_nb  # noqa: E402

try:  # a module-level class: backtesting.py's optimize pickles it to its worker processes
    from backtesting import Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        """backtesting.py's SMA crossover: close, then buy or sell."""

        n1 = 10
        n2 = 30

        def init(self) -> None:
            """Declare the two SMAs."""
            self.ma1 = self.I(SMA, self.data.Close, self.n1)
            self.ma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            """Reverse on a cross."""
            if crossover(self.ma1, self.ma2):
                self.position.close()
                self.buy()
            elif crossover(self.ma2, self.ma1):
                self.position.close()
                self.sell()

except ImportError:  # pragma: no cover
    pass

from numba import njit  # noqa: E402


@njit(cache=True, nogil=True)
def bare_loop_nb(open_, close, fast, slow, rate, equity):
    """Calibrate the machine: the tightest SMA-cross loop (next-open fills, no extras)."""
    cash = 10_000.0
    pos = 0.0
    want = 0.0
    for t in range(close.shape[0]):
        if want != 0.0 and t > 0:
            p = open_[t]
            if pos != 0.0:
                cash += pos * p - abs(pos) * p * rate
            shares = (cash // (p * (1.0 + rate))) * want
            cash -= shares * p + abs(shares) * p * rate
            pos = shares
            want = 0.0
        if t > 0 and fast[t - 1] < slow[t - 1] and fast[t] > slow[t]:
            want = 1.0
        elif t > 0 and slow[t - 1] < fast[t - 1] and slow[t] > fast[t]:
            want = -1.0
        equity[t] = cash + pos * close[t]
    return cash


DATA_DIR = _REPO_ROOT.parent / "shared" / "data" / "ohlcv" / "daily"
BARS = 2520
FAST, SLOW, COMMISSION = 10, 30, 0.002


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    """Return the best wall time of ``fn`` in seconds over ``repeats`` calls (after one).

    The best, not the median: these machines are shared, and other tenants' load only ever
    adds time.
    """
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _row(what: str, seconds: float, note: str = "") -> None:
    """Print one result line."""
    if seconds < 1e-3:
        shown = f"{seconds * 1e6:10.1f} us"
    elif seconds < 1:
        shown = f"{seconds * 1e3:10.2f} ms"
    else:
        shown = f"{seconds:10.2f} s "
    print(f"  {what:<44}{shown}  {note}")


def load() -> pd.DataFrame:
    """Return the benchmark bars."""
    df = pd.read_csv(DATA_DIR / "AAPL.csv", parse_dates=["date"], index_col="date")
    return df[["open", "high", "low", "close", "volume"]].iloc[-BARS:]


def calibrate(df: pd.DataFrame) -> None:
    """Print the load average and the time of a bare numba loop (7 us on a quiet machine)."""
    close = df["close"].to_numpy(dtype=np.float64)
    open_ = df["open"].to_numpy(dtype=np.float64)
    fast_line, slow_line = sma_nb(close, FAST), sma_nb(close, SLOW)
    out = np.empty(len(df))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min)")
    _row(
        "calibration: bare numba loop (MEASURED: 7 us)",
        _median_time(
            lambda: bare_loop_nb(open_, close, fast_line, slow_line, COMMISSION, out), 300
        ),
        "this machine's speed now",
    )


def bench_single(df: pd.DataFrame) -> None:
    """Time one ten-year backtest in the engine and in the peers."""
    print(f"1. One backtest: SMA {FAST}/{SLOW} long/short, {len(df)} daily bars")
    bars = Bars(open=df["open"], high=df["high"], low=df["low"], close=df["close"])
    close = bars.close[:, 0].copy()
    spec = make_spec(
        initial_capital=10_000, commission_rate=COMMISSION, allow_short=True, final_at_open=True
    )
    target = crossover_target_nb(sma_nb(close, FAST), sma_nb(close, SLOW), True).reshape(-1, 1)
    n = len(df)
    eq, cash, pos = np.empty(n), np.empty(n), np.empty((n, 1))
    atr = np.full((n, 1), np.nan)

    def kernel() -> object:
        return core.simulate_nb(
            bars.open, bars.high, bars.low, bars.close, target, atr, spec, True, eq, cash, pos
        )

    def end_to_end() -> float:
        t = crossover_target_nb(sma_nb(close, FAST), sma_nb(close, SLOW), True)
        return simulate(bars, t, spec).final_capital

    vec = [np.ascontiguousarray(a[:, 0]) for a in (bars.open, bars.high, bars.low, bars.close)]
    stats = np.empty(N_STATS)
    fast_line, slow_line = sma_nb(close, FAST), sma_nb(close, SLOW)

    no_returns, totals = np.empty(0), np.empty((2, 1))

    def sweep_kernel() -> None:
        simulate_one_nb(
            *vec, close, fast_line, slow_line, True, close, spec, 0.0, stats, no_returns, totals
        )

    final = end_to_end()
    _row(
        "engine kernel (fill log, targets given)", _median_time(kernel, 300), f"final {final:,.2f}"
    )
    _row("engine end to end (SMAs, targets, wrapper)", _median_time(end_to_end, 300))
    _row("sweep kernel (one trial, no log)", _median_time(sweep_kernel, 300))

    try:
        from backtesting import Backtest

        data = df.rename(columns=str.capitalize)
        bt = Backtest(data, SmaCross, cash=10_000, commission=COMMISSION, finalize_trades=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bt.run()
            secs = _median_time(bt.run, 5)
        _row("backtesting.py run", secs, f"final {res['Equity Final [$]']:,.2f}")
    except ImportError:
        print("  backtesting.py not installed")

    try:
        import vectorbt as vbt

        entries = pd.Series(target[:, 0] == 1.0, index=df.index)
        exits = pd.Series(target[:, 0] == -1.0, index=df.index)

        def vbt_run() -> float:
            pf = vbt.Portfolio.from_signals(
                df["close"],
                entries,
                exits,
                short_entries=exits,
                short_exits=entries,
                fees=COMMISSION,
                init_cash=10_000,
                freq="1D",
            )
            return float(pf.final_value())

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            final_vbt = vbt_run()
            secs = _median_time(vbt_run, 20)
        _row("vectorbt from_signals (close fills, fractional)", secs, f"final {final_vbt:,.2f}")
    except ImportError:
        print("  vectorbt not installed")


def bench_sweep(df: pd.DataFrame) -> None:
    """Time the SMA grid in the engine and in the peers."""
    pairs = sma_pairs(range(5, 51), range(10, 201, 5))
    print(f"2. SMA sweep: {len(pairs)} backtests (fast 5..50, slow 10..200 step 5)")
    bars = Bars(open=df["open"], high=df["high"], low=df["low"], close=df["close"])
    spec = make_spec(initial_capital=10_000, commission_rate=COMMISSION, allow_short=True)
    for blocks in (0, 10):
        secs = _median_time(lambda b=blocks: sweep_crossover(bars, pairs, spec, n_blocks=b), 7)
        what = "engine sweep" + (" + CSCV block sums (as /optimize)" if blocks else "")
        _row(what, secs, f"{len(pairs) / secs:,.0f} backtests/s")

    try:
        from backtesting import Backtest

        data = df.rename(columns=str.capitalize)
        bt = Backtest(data, SmaCross, cash=10_000, commission=COMMISSION, finalize_trades=True)
        sample = 40
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            bt.optimize(
                n1=range(5, 9),
                n2=range(60, 201, 15),
                maximize="Equity Final [$]",
                max_tries=sample,
                random_state=0,
                return_heatmap=False,
            )
            secs = time.perf_counter() - t0
        _row(
            f"backtesting.py optimize ({sample} of the grid)",
            secs,
            f"{sample / secs:,.0f} backtests/s",
        )
    except ImportError:
        print("  backtesting.py not installed")

    try:
        import vectorbt as vbt

        close = df["close"]
        fw = [f for f, _ in pairs]
        sw = [s for _, s in pairs]

        def vbt_sweep() -> None:
            fast = vbt.MA.run(close, window=fw).ma.to_numpy()
            slow = vbt.MA.run(close, window=sw).ma.to_numpy()
            above = fast > slow
            prev = np.vstack([above[:1], above[:-1]])
            entries = pd.DataFrame(above & ~prev, index=close.index)
            exits = pd.DataFrame(~above & prev, index=close.index)
            vbt.Portfolio.from_signals(
                close,
                entries,
                exits,
                short_entries=exits,
                short_exits=entries,
                fees=COMMISSION,
                init_cash=10_000,
                freq="1D",
            ).total_return()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            secs = _median_time(vbt_sweep, 3)
        _row("vectorbt broadcast from_signals", secs, f"{len(pairs) / secs:,.0f} backtests/s")
    except ImportError:
        print("  vectorbt not installed")


def bench_monte_carlo(df: pd.DataFrame) -> None:
    """Time a 1,000-run Monte Carlo of the SMA backtest."""
    print("3. Monte Carlo: 1,000 runs of each method")
    bars = Bars(open=df["open"], high=df["high"], low=df["low"], close=df["close"])
    close = bars.close[:, 0].copy()
    spec = make_spec(initial_capital=10_000, commission_rate=COMMISSION, allow_short=True)
    res = simulate(bars, crossover_target_nb(sma_nb(close, FAST), sma_nb(close, SLOW), True), spec)
    secs = _median_time(
        lambda: monte_carlo(res.trade_returns, res.returns, n_runs=1000, seed=7), 10
    )
    mc = monte_carlo(res.trade_returns, res.returns, n_runs=1000, seed=7)
    _row(
        f"trade bootstrap + block bootstrap (block {mc.block})",
        secs,
        f"{res.n_trades} trades, {len(res.returns)} returns",
    )
    for name, dist in (("trades", mc.trades), ("blocks", mc.blocks)):
        s = dist.summary()
        fr = s["final_return"]
        dd = s["max_drawdown"]
        assert isinstance(fr, dict) and isinstance(dd, dict)
        print(
            f"    {name:<7} final return p5/p50/p95 {fr['p5']:+.2f}/{fr['p50']:+.2f}/"
            f"{fr['p95']:+.2f}  max DD p50 {dd['p50']:+.2f}  P(loss) "
            f"{s['probability_of_loss']:.2f}  VaR95 {s['var']:.2f}  CVaR95 {s['cvar']:.2f}"
        )


def bench_http(df: pd.DataFrame) -> None:
    """Time backtests, the sweep and a Monte Carlo through the backtest service's HTTP API."""
    import tempfile

    import httpx

    from services.backtest.app import create_app as create_backtest
    from services.backtest.settings import BacktestSettings
    from services.market.app import create_app as create_market
    from services.market.settings import SHARED_CSV_DIR, MarketSettings
    from trading.cli import free_port, serve_in_thread
    from trading.host import build_platform_app

    print("4. Through the HTTP API (uvicorn on localhost, warm: bars cached, kernels loaded)")
    config = {
        "symbol": "AAPL",
        "start_date": str(df.index[0].date()),
        "end_date": str(df.index[-1].date()),
        "initial_capital": 10_000,
        "strategy": {
            "name": "sma_crossover",
            "params": {"fast": FAST, "slow": SLOW, "allow_short": True},
        },
        "commission_rate": COMMISSION,
        "slippage": 0.0,
        "warmup_period": 0,
        "equity_points": 100,
    }
    sweep = {
        **{k: v for k, v in config.items() if k != "equity_points"},
        "param_grid": {
            "fast": {"start": 5, "stop": 50, "step": 1},
            "slow": {"start": 10, "stop": 200, "step": 5},
        },
        "constraints": ["fast < slow"],
        "top_n": 5,
    }
    with tempfile.TemporaryDirectory() as tmp:
        common = {"data_dir": Path(tmp), "database_url": None, "redis_url": None}
        apps = {
            "market": create_market(
                MarketSettings(**common, market_data_dir=SHARED_CSV_DIR, market_providers=["csv"])
            ),
            "backtest": create_backtest(
                BacktestSettings(**common, log_level="WARNING", backtest_sync_max_trial_bars=10**9)
            ),
        }
        with (
            serve_in_thread(build_platform_app(apps), free_port()) as url,
            httpx.Client(base_url=f"{url}/backtest", timeout=300) as http,
        ):

            def post(path: str, body: dict[str, object]) -> dict[str, object]:
                answer = http.post(path, json=body)
                answer.raise_for_status()
                return answer.json()  # type: ignore[no-any-return]

            run = post("/backtest", config)
            metrics = run["metrics"]
            assert isinstance(metrics, dict)
            _row(
                "warm POST /backtest, same request",
                _median_time(lambda: post("/backtest", config), 50),
                f"final {metrics['final_capital']:,.2f}, stored with its fills",
            )
            # parameters never asked before (a repeat would be answered from the memo)
            unseen = ((f, s) for s in range(SLOW + 1, 200) for f in range(2, 30))

            def fresh() -> object:
                f, s = next(unseen)
                p = {"fast": f, "slow": s, "allow_short": True}
                return post(
                    "/backtest", {**config, "strategy": {"name": "sma_crossover", "params": p}}
                )

            _row(
                "warm POST /backtest, new parameters",
                _median_time(fresh, 20),
                "engine + metrics (1,000-sample bootstrap CI) + store",
            )
            result = post("/optimize", sweep)
            trials = int(result["n_trials"])  # type: ignore[call-overload]
            secs = _median_time(lambda: post("/optimize", sweep), 5)
            _row(
                f"POST /optimize, {trials:,} trials",
                secs,
                f"{trials / secs:,.0f} backtests/s; DSR {result['deflated_sharpe_ratio']:.2f}, "
                f"PBO {result['pbo']:.2f}",
            )
            mc = {"run_id": run["run_id"], "n_runs": 1000, "seed": 7}
            post("/monte_carlo", mc)
            _row(
                "POST /monte_carlo, 1,000 runs of each method",
                _median_time(lambda: post("/monte_carlo", mc), 20),
            )


def bench_language(df: pd.DataFrame) -> None:
    """Time a language strategy beside the native kernel of the same rule."""
    from services.backtest.config import BacktestConfig, simulate_config, strategy_definition
    from services.backtest.grid import Combos
    from services.backtest.optimize import TrialBatch, run_batch

    up = "crosses_above(sma(close, $fast), sma(close, $slow))"
    down = "crosses_below(sma(close, $fast), sma(close, $slow))"
    expression = {
        "rules": {"entry_long": up, "exit_long": down, "entry_short": down, "exit_short": up},
        "params": {
            "fast": {"default": FAST, "min": 2, "max": 500},
            "slow": {"default": SLOW, "min": 3, "max": 1000},
        },
    }
    native = {"name": "sma_crossover", "params": {"fast": FAST, "slow": SLOW, "allow_short": True}}
    base = {
        "symbol": "AAPL",
        "start_date": "2000-01-01",
        "end_date": "2030-01-01",
        "initial_capital": 10_000,
        "commission_rate": COMMISSION,
        "slippage": 0.0,
        "warmup_period": 0,
    }
    bars = Bars(
        open=df["open"], high=df["high"], low=df["low"], close=df["close"], volume=df["volume"]
    )
    print(f"5. Strategy language: SMA {FAST}/{SLOW} long/short as rules vs sma_crossover")
    times = {}
    for what, strategy in (("native sma_crossover", native), ("language rules", expression)):
        config = BacktestConfig.model_validate({**base, "strategy": strategy})
        final = simulate_config(config, bars).final_capital
        times[what] = _median_time(lambda c=config: simulate_config(c, bars), 100)
        _row(f"{what}: one backtest end to end", times[what], f"final {final:,.2f}")
    ratio = times["language rules"] / times["native sma_crossover"]
    print(f"  language / native, one backtest: {ratio:.2f}x (target <= 2x)")
    pairs = sma_pairs(range(5, 51), range(10, 201, 5))
    combos = Combos({"fast": [f for f, _ in pairs], "slow": [s for _, s in pairs]}, len(pairs))
    rates = {}
    for what, strategy in (("native sma_crossover", native), ("language rules", expression)):
        config = BacktestConfig.model_validate({**base, "strategy": strategy})
        d, params = strategy_definition(config.strategy)
        task = TrialBatch(
            bars=bars,
            strategy=d,
            fixed=params.model_dump(),
            combos=combos,
            spec=config.to_spec(),
            risk_free_rate=0.02,
            keep_returns=False,
            n_blocks=10,
        )
        secs = _median_time(lambda t=task: run_batch(t), 5)
        rates[what] = len(pairs) / secs
        _row(f"{what}: sweep as /optimize", secs, f"{rates[what]:,.0f} backtests/s")
    print(
        f"  language sweep: {rates['language rules']:,.0f} trials/s (target >= 50,000), "
        f"{rates['language rules'] / rates['native sma_crossover']:.2f}x native's rate"
    )


SECTIONS: dict[str, Callable[[pd.DataFrame], None]] = {
    "single": bench_single,
    "sweep": bench_sweep,
    "monte_carlo": bench_monte_carlo,
    "http": bench_http,
    "language": bench_language,
}


def main() -> None:
    """Run the benchmarks named on the command line (all four by default); print figures."""
    names = sys.argv[1:] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    df = load()
    calibrate(df)
    for name in names:
        SECTIONS[name](df)
    calibrate(df)  # again: the load may have changed while the sections ran


if __name__ == "__main__":
    main()
