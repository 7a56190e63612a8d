"""Strategies written in the language against the same strategies written for backtesting.py.

Three strategies (an RSI entry under an SMA trend filter; a Bollinger breakout confirmed by
`highest`/`lowest`; a MACD cross with a volume filter), each once as rules and once as a
backtesting.py ``Strategy`` whose ``next`` applies the language's documented semantics to its
actual position (exits first, then entries; an entry reverses the other side). Indicators
are the same ``shared.quant`` kernels on both sides, so the test holds the rules' meaning,
the warm-up and the engine's fills to backtesting.py's: same fills (bar, side, shares) and
the same final equity, as ``test_oracle.py`` does for the SMA crossover (next-open fills,
whole shares, 0.2% commission, finalize_trades at the last open).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.backtest.config import BacktestConfig, simulate_config
from services.backtest.engine.runner import Bars
from services.backtest.language.functions import FUNCTIONS
from services.backtest.language.program import bars_of
from tests.unit.backtest.test_oracle import _btpy_fills

Arrays = dict[str, np.ndarray]
Signals = Callable[[Arrays], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _f(name: str, b: Arrays, *args: Any) -> np.ndarray:
    return FUNCTIONS[name].compute(b, args)


def _rsi_trend(b: Arrays) -> tuple[np.ndarray, ...]:
    c = b["close"]
    rsi, trend = _f("rsi", b, c, 14), _f("sma", b, c, 100)
    with np.errstate(invalid="ignore"):
        return (rsi < 40) & (c > trend), rsi > 65, np.zeros(len(c), bool), np.zeros(len(c), bool)


def _breakout(b: Arrays) -> tuple[np.ndarray, ...]:
    c = b["close"]
    up, lo = _f("bb_upper", b, c, 20, 2.0), _f("bb_lower", b, c, 20, 2.0)
    hi20, lo20 = _f("highest", b, c, 20), _f("lowest", b, c, 20)
    hi10, lo10 = _f("highest", b, c, 10), _f("lowest", b, c, 10)
    with np.errstate(invalid="ignore"):
        return (c > up) & (c >= hi20), c <= lo10, (c < lo) & (c <= lo20), c >= hi10


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a), bool)
    with np.errstate(invalid="ignore"):
        out[1:] = (a[:-1] < b[:-1]) & (a[1:] > b[1:])
    return out


def _macd_volume(b: Arrays) -> tuple[np.ndarray, ...]:
    c, v = b["close"], b["volume"]
    line, signal = _f("macd", b, c, 12, 26), _f("macd_signal", b, c, 12, 26, 9)
    with np.errstate(invalid="ignore"):
        busy = v > _f("sma", b, v, 20)
    up, down = _cross(line, signal), _cross(signal, line)
    return up & busy, down, np.zeros(len(c), bool), np.zeros(len(c), bool)


CASES: list[tuple[str, dict[str, str], Signals, list[tuple[str, Any]]]] = [
    (
        "rsi_trend",
        {
            "entry_long": "rsi(close, 14) < 40 and close > sma(close, 100)",
            "exit_long": "rsi(close, 14) > 65",
        },
        _rsi_trend,
        [("rsi", (14,)), ("sma", (100,))],
    ),
    (
        "bollinger_breakout",
        {
            "entry_long": "close > bb_upper(close, 20, 2) and close >= highest(close, 20)",
            "exit_long": "close <= lowest(close, 10)",
            "entry_short": "close < bb_lower(close, 20, 2) and close <= lowest(close, 20)",
            "exit_short": "close >= highest(close, 10)",
        },
        _breakout,
        [],
    ),
    (
        "macd_volume",
        {
            "entry_long": "crosses_above(macd(close, 12, 26), macd_signal(close, 12, 26, 9)) "
            "and volume > sma(volume, 20)",
            "exit_long": "crosses_below(macd(close, 12, 26), macd_signal(close, 12, 26, 9))",
        },
        _macd_volume,
        [],
    ),
]


def _first_valid(b: Arrays, rules: dict[str, str]) -> int:
    """Return backtesting.py's first `next` bar: 1 + the latest first value of the
    indicators (the language's ready bar is one earlier: its warm-up covers that bar)."""
    from services.backtest.language.program import Evaluation, compile_program

    program = compile_program(list(rules.items()), [])
    ev = Evaluation(b)
    program.decide(ev, {})
    return ev.ready + 1


def _run_btpy(df: pd.DataFrame, signals: tuple[np.ndarray, ...], start: int) -> pd.Series:
    from backtesting import Backtest, Strategy

    el, xl, es, xs = signals
    n = len(df)

    class Rules(Strategy):
        def init(self) -> None:
            # one indicator whose first value is at `start - 1`: backtesting.py then calls
            # next from `start`, the engine's warmup_period
            warm = np.arange(len(self.data.Close), dtype=float)
            warm[: start - 1] = np.nan
            self.warm = self.I(lambda: warm, name="warm")

        def next(self) -> None:
            t = len(self.data.Close) - 1
            if t == n - 1:  # the engine ignores decisions at the last bar (nothing to fill)
                return
            side = 1 if self.position.is_long else (-1 if self.position.is_short else 0)
            new = side
            if (side == 1 and xl[t]) or (side == -1 and xs[t]):
                new = 0
            if new <= 0 and el[t]:
                new = 1
            elif new >= 0 and es[t]:
                new = -1
            if new != side:
                if self.position:
                    self.position.close()
                if new == 1:
                    self.buy()
                elif new == -1:
                    self.sell()

    data = df.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]
    bt = Backtest(data, Rules, cash=10_000, commission=0.002, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.run()


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "JPM", "KO"])
@pytest.mark.parametrize(("name", "rules", "signals", "_"), CASES)
def test_language_matches_backtesting_py(
    symbol: str, name: str, rules: dict[str, str], signals: Signals, _: Any
) -> None:
    from tests.unit.backtest.conftest import load_frame

    df = load_frame(symbol).iloc[-2520:]
    b = bars_of(df["open"], df["high"], df["low"], df["close"], df["volume"])
    start = _first_valid(b, rules)
    config = BacktestConfig.model_validate(
        {
            "symbol": symbol,
            "start_date": str(df.index[0].date()),
            "end_date": str(df.index[-1].date()),
            "initial_capital": 10_000,
            "strategy": {"rules": rules},
            "commission_rate": 0.002,
            "slippage": 0.0,
            "position_size": {"method": "all_in"},
            "fill": "next_open",
            "warmup_period": start,
        }
    )
    bars = Bars(
        open=df["open"].to_numpy(),
        high=df["high"].to_numpy(),
        low=df["low"].to_numpy(),
        close=df["close"].to_numpy(),
        volume=df["volume"].to_numpy(),
    )
    sig = signals(b)

    ours = simulate_config(config, bars, final_at_open=True)
    theirs = _run_btpy(df, sig, start)

    fills = ours.fills_frame()
    mine = list(
        zip(
            fills["bar"].tolist(),
            np.where(fills["direction"] == "buy", 1, -1).tolist(),
            fills["shares"].astype(int).tolist(),
            strict=True,
        )
    )
    assert len(mine) >= 4, f"{name} on {symbol}: too few trades to compare"
    assert mine == _btpy_fills(theirs)
    assert ours.final_capital == pytest.approx(theirs["Equity Final [$]"], rel=1e-6)
