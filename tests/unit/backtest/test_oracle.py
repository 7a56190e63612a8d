"""The engine against peers on real bars: backtesting.py (next open) and vectorbt (close)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from services.backtest.config import BacktestConfig, simulate_config
from services.backtest.engine.runner import make_spec, simulate
from services.backtest.engine.signals import crossover_target_nb
from shared.quant.kernels import sma_nb
from tests.unit.backtest.conftest import frame_bars, load_frame, run_btpy_smacross

CASES = [
    ("GOOG_btpy", 10, 20),
    ("GOOG_btpy", 5, 30),
    ("AAPL", 10, 30),
    ("MSFT", 20, 50),
    ("JPM", 10, 20),
    ("XOM", 15, 40),
    ("KO", 8, 21),
    ("NVDA", 10, 40),
]


def _btpy_fills(stats: pd.Series) -> list[tuple[int, int, int]]:
    """Return backtesting.py's trades as fills (bar, side, shares) in execution order.

    Within a bar: exits of older trades, then entries, then exits of trades entered there.
    """
    fills = []
    for t in stats._trades.itertuples():
        side = 1 if t.Size > 0 else -1
        entry, exit_ = int(t.EntryBar), int(t.ExitBar)
        fills.append((entry, 1, side, abs(int(t.Size))))
        fills.append((exit_, 2 if exit_ == entry else 0, -side, abs(int(t.Size))))
    return [(b, s, q) for b, _, s, q in sorted(fills)]


@pytest.mark.parametrize(("name", "fast", "slow"), CASES)
def test_sma_crossover_matches_backtesting_py(name: str, fast: int, slow: int) -> None:
    df = load_frame(name)
    config = BacktestConfig.model_validate(
        {
            "symbol": name.split("_")[0],
            "start_date": str(df.index[0].date()),
            "end_date": str(df.index[-1].date()),
            "initial_capital": 10000,
            "strategy": {
                "name": "sma_crossover",
                "params": {"fast": fast, "slow": slow, "allow_short": True},
            },
            "commission": 0.0,
            "commission_rate": 0.002,
            "min_commission": 0.0,
            "slippage": 0.0,
            "position_size": {"method": "all_in"},
            "fractional_shares": False,
            "stop_loss": None,
            "take_profit": None,
            "max_positions": 1,
            "fill": "next_open",
            "warmup_period": 0,
            "data_frequency": "1d",
            "risk_free_rate": 0.02,
        }
    )
    bars = frame_bars(df)
    # backtesting.py's finalize_trades closes at the last bar's open, and also fills an order
    # decided on the last bar there; the first is the `final_at_open` switch, the second must
    # not arise in these cases.
    close = bars.close[:, 0]
    last = crossover_target_nb(sma_nb(close, fast), sma_nb(close, slow), True)[-1]
    assert np.isnan(last), "a signal on the last bar: choose another case"

    ours = simulate_config(config, bars, final_at_open=True)
    theirs = run_btpy_smacross(df, fast, slow, 0.002)

    fills = ours.fills_frame()
    mine = list(
        zip(
            fills["bar"].tolist(),
            np.where(fills["direction"] == "buy", 1, -1).tolist(),
            fills["shares"].astype(int).tolist(),
            strict=True,
        )
    )
    assert mine == _btpy_fills(theirs)
    assert ours.n_trades == theirs["# Trades"]
    assert ours.final_capital == pytest.approx(theirs["Equity Final [$]"], rel=1e-6)
    # every round trip's pnl (commissions included) agrees as well
    closing = fills[fills["pnl"].notna()]
    their_pnl = theirs._trades.sort_values("ExitBar")["PnL"].to_numpy()
    np.testing.assert_allclose(closing["pnl"].to_numpy(), their_pnl, rtol=1e-6, atol=1e-6)
    # and the equity curve from the first trade on
    np.testing.assert_allclose(ours.equity, theirs._equity_curve["Equity"].to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("name", ["AAPL", "GSPC"])
def test_fill_on_close_matches_vectorbt(name: str) -> None:
    vbt = pytest.importorskip("vectorbt")
    df = load_frame(name).iloc[-2520:]
    bars = frame_bars(df)
    close = bars.close[:, 0]
    target = crossover_target_nb(sma_nb(close, 10), sma_nb(close, 30), False)
    assert np.isnan(target[-1])
    fee = 0.001
    spec = make_spec(initial_capital=10_000, commission_rate=fee, fractional=True, fill="close")
    ours = simulate(bars, target, spec)

    entries = pd.Series(target == 1.0, index=df.index)
    exits = pd.Series(target == 0.0, index=df.index)
    with warnings.catch_warnings():  # vectorbt 1.2 uses pandas APIs pandas 3 deprecates
        warnings.simplefilter("ignore")
        pf = vbt.Portfolio.from_signals(
            df["close"], entries, exits, init_cash=10_000, fees=fee, freq="1D"
        )
        value = pf.value().to_numpy()
        orders = pf.orders.records_readable
        cash_end = pf.cash().to_numpy()[-1]
        shares_left = pf.assets().to_numpy()[-1]
    # Bar by bar, up to the last bar (where we close what is open, and vectorbt does not).
    np.testing.assert_allclose(ours.equity[:-1], value[:-1], rtol=1e-9)
    fills = ours.fills_frame()
    np.testing.assert_allclose(
        fills["shares"].to_numpy()[: len(orders)], orders["Size"].to_numpy(), rtol=1e-9
    )
    np.testing.assert_allclose(
        fills["price"].to_numpy()[: len(orders)], orders["Price"].to_numpy(), rtol=1e-12
    )
    expected = cash_end + shares_left * close[-1] * (1 - fee)
    assert ours.final_capital == pytest.approx(expected, rel=1e-9)
