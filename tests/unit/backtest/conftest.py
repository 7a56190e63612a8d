"""Helpers for the backtest engine tests: shared CSV bars and random bar generators."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from services.backtest.engine.runner import Bars

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "ohlcv" / "daily"


@cache
def load_frame(name: str) -> pd.DataFrame:
    """Return a shared daily CSV as a frame indexed by date (open, high, low, close)."""
    path = DATA / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"shared market data missing: {path}")
    df = pd.read_csv(path, parse_dates=["date"], index_col="date")
    return df[["open", "high", "low", "close", "volume"]]


def frame_bars(df: pd.DataFrame) -> Bars:
    """Return single-symbol engine bars of a frame."""
    return Bars(
        open=df["open"].to_numpy(),
        high=df["high"].to_numpy(),
        low=df["low"].to_numpy(),
        close=df["close"].to_numpy(),
        index=df.index.to_numpy(dtype="datetime64[ns]"),
    )


def random_bars(rng: np.random.Generator, n: int, m: int, vol: float = 0.03) -> Bars:
    """Return ``m`` random-walk OHLC series of ``n`` consistent bars (gaps included)."""
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n, m)), axis=0))
    prev = np.vstack([np.full((1, m), 100.0), close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, vol / 2, (n, m)))
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, (n, m))))
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, (n, m))))
    return Bars(open=open_, high=hi, low=lo, close=close)


def run_btpy_smacross(df: pd.DataFrame, fast: int, slow: int, commission: float):
    """Run backtesting.py's SmaCross (close, then buy/sell) with finalize_trades=True."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        def init(self) -> None:
            self.ma1 = self.I(SMA, self.data.Close, fast)
            self.ma2 = self.I(SMA, self.data.Close, slow)

        def next(self) -> None:
            if crossover(self.ma1, self.ma2):
                self.position.close()
                self.buy()
            elif crossover(self.ma2, self.ma1):
                self.position.close()
                self.sell()

    data = df.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]
    bt = Backtest(data, SmaCross, cash=10_000, commission=commission, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.run()
