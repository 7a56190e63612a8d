"""The engine's rules on hand-made bars: stops, rejections, portfolios, warm-up, fills."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.backtest.config import BacktestConfig, simulate_config
from services.backtest.engine.runner import Bars, make_spec, simulate
from services.backtest.expressions import SavedStrategy
from services.backtest.strategies import ArraySignals, build_targets

NAN = np.nan


def _bars(rows: list[tuple[float, float, float, float]]) -> Bars:
    a = np.array(rows, dtype=float)
    return Bars(open=a[:, 0], high=a[:, 1], low=a[:, 2], close=a[:, 3])


def _fills(res) -> list[tuple[int, str, float, float, str]]:
    f = res.fills_frame()
    return list(
        zip(f["bar"], f["direction"], f["shares"], f["price"].round(6), f["reason"], strict=True)
    )


FLAT = (100.0, 101.0, 99.0, 100.0)


def test_long_stop_gapped_through_fills_at_the_open() -> None:
    bars = _bars([FLAT, FLAT, (100, 100.5, 99.5, 100), (90, 91, 85, 88), FLAT])
    spec = make_spec(initial_capital=1000, stop_loss=0.05)
    res = simulate(bars, [1, NAN, NAN, NAN, NAN], spec)
    # bought 9 at the open of bar 1 (100); stop 95; bar 3 opens at 90, below it
    assert _fills(res)[:2] == [
        (1, "buy", 9.0, 100.0, "signal"),
        (3, "sell", 9.0, 90.0, "stop_loss"),
    ]


def test_long_stop_touched_inside_the_bar_fills_at_the_level() -> None:
    bars = _bars([FLAT, FLAT, (99, 100, 94, 96), FLAT])
    res = simulate(bars, [1, NAN, NAN, NAN], make_spec(initial_capital=1000, stop_loss=0.05))
    assert _fills(res)[1] == (2, "sell", 9.0, 95.0, "stop_loss")


def test_stop_wins_when_both_levels_are_in_one_bar() -> None:
    bars = _bars([FLAT, FLAT, (100, 112, 94, 100), FLAT])
    spec = make_spec(initial_capital=1000, stop_loss=0.05, take_profit=0.10)
    res = simulate(bars, [1, NAN, NAN, NAN], spec)
    assert _fills(res)[1] == (2, "sell", 9.0, 95.0, "stop_loss")


def test_take_profit_and_its_gap() -> None:
    bars = _bars([FLAT, FLAT, (100, 111, 99, 105), FLAT, FLAT, (120, 121, 119, 120), FLAT])
    spec = make_spec(initial_capital=1000, take_profit=0.10)
    res = simulate(bars, [1, NAN, NAN, 1, NAN, NAN, NAN], spec)
    fills = _fills(res)
    assert fills[1] == (2, "sell", 9.0, 110.0, "take_profit")
    # re-entered at bar 4's open (100); bar 5 opens at 120, above the 110 target
    assert fills[2][:2] == (4, "buy") and fills[3] == (5, "sell", 10.0, 120.0, "take_profit")


def test_short_stop_gap_and_slippage_are_adverse() -> None:
    bars = _bars([FLAT, FLAT, (110, 112, 108, 111), FLAT])
    spec = make_spec(initial_capital=1000, stop_loss=0.05, allow_short=True, slippage=0.01)
    res = simulate(bars, [-1, NAN, NAN, NAN], spec)
    fills = _fills(res)
    assert fills[0] == (1, "sell", 10.0, 99.0, "signal")  # 100 * (1 - 0.01), 10 shares
    assert fills[1] == (2, "buy", 10.0, 111.1, "stop_loss")  # gap open 110 * 1.01
    f = res.fills_frame()
    assert f["slippage_cost"].tolist() == pytest.approx([10.0, 11.0])


def test_fill_on_close_stops_start_the_bar_after_entry() -> None:
    bars = _bars([FLAT, (100, 100, 80, 100), FLAT])
    spec = make_spec(initial_capital=1000, stop_loss=0.05, fill="close")
    res = simulate(bars, [NAN, 1, NAN], spec)
    assert _fills(res)[0] == (1, "buy", 9.0, 100.0, "signal")  # not stopped by its own bar
    assert _fills(res)[1][4] == "end"


def test_commission_rules_and_rejection_counting() -> None:
    bars = _bars([FLAT] * 6)
    spec = make_spec(
        initial_capital=1000,
        commission=0.01,
        commission_rate=0.001,
        min_commission=2.0,
        size_method="fixed_shares",
        size_value=50.0,
    )
    res = simulate(bars, [1, 0, 1, NAN, NAN, NAN], spec)
    f = res.fills_frame()
    # 50 shares cost 5000 > 1000: resized to what the cash pays, commission included
    first = f.iloc[0]
    assert first["shares"] == 9.0
    assert first["commission"] == pytest.approx(max(2.0, 9 * (0.01 + 100 * 0.001)))
    assert first["total_cost"] == pytest.approx(900 + first["commission"])
    assert res.n_resized == 2 and res.n_rejected == 0
    tiny = make_spec(initial_capital=50, size_method="fixed_shares", size_value=1.0)
    res = simulate(bars, [1, 0, 1, NAN, NAN, NAN], tiny)
    assert res.n_rejected == 2 and res.fills.shape[0] == 0
    assert (res.cash >= 0).all()


def test_portfolio_max_positions_with_shared_cash() -> None:
    one = np.array([FLAT] * 5, dtype=float)
    bars = Bars(
        open=np.repeat(one[:, :1], 3, axis=1),
        high=np.repeat(one[:, 1:2], 3, axis=1),
        low=np.repeat(one[:, 2:3], 3, axis=1),
        close=np.repeat(one[:, 3:], 3, axis=1),
        symbols=("A", "B", "C"),
    )
    target = np.full((5, 3), NAN)
    target[0] = 1.0  # all three want in at once; two slots
    target[2, 0] = 0.0  # A leaves: C may come in on its next wish
    target[3, 2] = 1.0
    res = simulate(bars, target, make_spec(initial_capital=1000, max_positions=2))
    f = res.fills_frame(bars)
    opened = f[(f["direction"] == "buy")]
    assert opened[["bar", "symbol", "shares"]].values.tolist() == [
        [1, "A", 4.0],  # half the cash for each of the two free slots
        [1, "B", 5.0],  # the rest (600 after A) for the last slot
        [4, "C", 4.0],  # A's 400 back plus B's 100 left: 500 for the one free slot
    ]
    assert res.n_rejected == 1  # C at bar 1
    assert ((res.positions != 0).sum(axis=1) <= 2).all()
    marked = res.cash + (res.positions * bars.close).sum(axis=1)
    np.testing.assert_allclose(marked, res.equity)


def test_warmup_ignores_earlier_decisions() -> None:
    bars = _bars([FLAT] * 6)
    res = simulate(bars, [1, NAN, NAN, 1, NAN, NAN], make_spec(initial_capital=1000, warmup=2))
    assert _fills(res)[0][:2] == (4, "buy")
    res = simulate(bars, [1, NAN, NAN, NAN, NAN, NAN], make_spec(initial_capital=1000, warmup=2))
    assert res.fills.shape[0] == 0


def test_volatility_target_sizes_by_atr() -> None:
    bars = _bars([FLAT] * 4)
    atr = np.full(4, 2.0)
    spec = make_spec(
        initial_capital=100_000,
        size_method="volatility_target",
        size_value=0.1,
        periods_per_year=256.0,
    )
    res = simulate(bars, [1, NAN, NAN, NAN], spec, atr)
    # shares * ATR * sqrt(256) = 10% of equity -> 10,000 / (2 * 16) = 312.5 -> 312
    assert res.fills[0, 3] == 312.0
    with pytest.raises(ValueError, match="atr"):
        simulate(bars, [1, NAN, NAN, NAN], spec)


def test_liquidation_when_equity_is_gone() -> None:
    bars = _bars([FLAT, FLAT, (150, 260, 150, 250), FLAT, FLAT])
    res = simulate(bars, [-1, NAN, NAN, 1, NAN], make_spec(initial_capital=1000, allow_short=True))
    assert _fills(res)[-1][4] == "liquidation"
    assert res.equity[2:].tolist() == [0.0, 0.0, 0.0]


def test_config_validation_names_the_field() -> None:
    base = {"symbol": "AAPL", "start_date": "2020-01-01", "end_date": "2021-01-01"}
    with pytest.raises(ValidationError) as e:
        BacktestConfig.model_validate(
            {**base, "strategy": {"name": "sma_crossover", "params": {"fast": 30, "slow": 10}}}
        )
    assert e.value.errors()[0]["loc"][-1] == "slow"
    # a name that is no built-in is a saved strategy's: the service resolves it (a 422
    # naming strategy.name when there is none, tests/unit/backtest/service/test_api.py)
    saved = BacktestConfig.model_validate({**base, "strategy": {"name": "nope"}})
    assert isinstance(saved.strategy, SavedStrategy)
    with pytest.raises(ValidationError) as e:
        BacktestConfig.model_validate({**base, "strategy": {"name": "Not A Name"}})
    assert "strategy" in e.value.errors()[0]["loc"]
    with pytest.raises(ValidationError) as e:
        BacktestConfig.model_validate(
            {**base, "end_date": "2019-01-01", "strategy": {"name": "buy_and_hold"}}
        )
    assert e.value.errors()[0]["loc"] == ("end_date",)
    with pytest.raises(ValidationError):
        BacktestConfig.model_validate(
            {**base, "symbols": ["MSFT"], "strategy": {"name": "buy_and_hold"}}
        )
    with pytest.raises(ValidationError) as e:
        BacktestConfig.model_validate(
            {**base, "strategy": {"name": "mean_reversion", "params": {"oversold": 80}}}
        )
    assert e.value.errors()[0]["loc"][-1] == "overbought"
    with pytest.raises(ValidationError) as e:
        BacktestConfig.model_validate(
            {
                **base,
                "strategy": {"name": "buy_and_hold"},
                "position_size": {"method": "percent_equity", "value": 1.5},
            }
        )
    assert e.value.errors()[0]["loc"][-1] == "value"


def test_ml_ensemble_takes_the_providers_targets() -> None:
    bars = _bars([FLAT] * 5)
    cfg = BacktestConfig.model_validate(
        {
            "symbol": "X",
            "start_date": "2020-01-01",
            "end_date": "2020-02-01",
            "strategy": {"name": "ml_ensemble"},
            "warmup_period": 0,
            "slippage": 0.0,
        }
    )
    signals = ArraySignals(np.array([NAN, 1, 1, 0, NAN]))
    res = simulate_config(cfg, bars, signals)
    assert [(b, d) for b, d, *_ in _fills(res)] == [(2, "buy"), (4, "sell")]
    with pytest.raises(ValueError, match="signal provider"):
        build_targets("ml_ensemble", {}, bars)


def test_covering_a_risen_short_sells_longs_first_and_cash_never_goes_negative() -> None:
    # A stays at 100; B, shorted at 100, rises to 250 while A is still held long.
    a_close = [100.0] * 6
    b_close = [100.0, 100.0, 180.0, 250.0, 250.0, 250.0]
    close = np.array([a_close, b_close]).T
    bars = Bars(open=close, high=close * 1.001, low=close * 0.999, close=close)
    target = np.full((6, 2), NAN)
    target[0] = [1.0, -1.0]  # long A, short B at bar 1's open
    target[3, 1] = 0.0  # cover B at bar 4's open; A is not asked to move
    spec = make_spec(initial_capital=1000, allow_short=True, max_positions=2)
    res = simulate(bars, target, spec)
    assert (res.cash >= 0.0).all()
    marked = res.cash + (res.positions * close).sum(axis=1)
    np.testing.assert_allclose(marked, res.equity, rtol=1e-12)
    f = res.fills_frame()
    at_cover = f[f["bar"] == 4]
    # the broker's margin call: A sold first (at its mark), then B covered, same bar
    rows = zip(at_cover["symbol"], at_cover["direction"], at_cover["reason"], strict=True)
    assert list(rows) == [
        (0, "sell", "margin_call"),
        (1, "buy", "signal"),
    ]
    assert res.equity[-1] > 0.0
