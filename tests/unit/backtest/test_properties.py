"""Properties of the engine on random bars and settings (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.backtest.engine import core
from services.backtest.engine.fast import (
    N_STATS,
    STAT_EXPOSURE,
    STAT_FINAL_CAPITAL,
    STAT_REJECTED,
    STAT_TRADES,
    STAT_WIN_RATE,
    simulate_one_nb,
)
from services.backtest.engine.runner import Bars, make_spec, simulate
from services.backtest.engine.signals import crossover_target_nb
from services.backtest.strategies import build_targets
from tests.unit.backtest.conftest import frame_bars, load_frame, random_bars

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw: st.DrawFn, max_symbols: int = 3) -> dict:
    """Draw bars, targets and engine settings."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(3, 60))
    m = draw(st.integers(1, max_symbols))
    rng = np.random.default_rng(seed)
    bars = random_bars(rng, n, m, vol=draw(st.sampled_from([0.01, 0.05, 0.2])))
    target = rng.choice([np.nan, 1.0, -1.0, 0.0], size=(n, m), p=[0.6, 0.15, 0.15, 0.1])
    method = draw(
        st.sampled_from(
            list(("all_in", "percent_equity", "fixed_cash", "fixed_shares", "volatility_target"))
        )
    )
    value = {
        "all_in": 1.0,
        "percent_equity": draw(st.floats(0.05, 1.0)),
        "fixed_cash": draw(st.floats(100.0, 50_000.0)),
        "fixed_shares": float(draw(st.integers(1, 500))),
        "volatility_target": draw(st.floats(0.05, 0.5)),
    }[method]
    kwargs = {
        "initial_capital": draw(st.floats(1_000.0, 1_000_000.0)),
        "commission": draw(st.sampled_from([0.0, 0.005, 0.05])),
        "commission_rate": draw(st.sampled_from([0.0, 0.001, 0.01])),
        "min_commission": draw(st.sampled_from([0.0, 1.0])),
        "slippage": draw(st.sampled_from([0.0, 0.0005, 0.01])),
        "size_method": method,
        "size_value": value,
        "fractional": draw(st.booleans()),
        "allow_short": draw(st.booleans()),
        "max_positions": draw(st.integers(1, 3)),
        "stop_loss": draw(st.sampled_from([None, 0.02, 0.1])),
        "take_profit": draw(st.sampled_from([None, 0.03, 0.2])),
        "fill": draw(st.sampled_from(["next_open", "close"])),
        "warmup": draw(st.integers(0, 5)),
    }
    atr = np.abs(rng.normal(2.0, 0.5, (n, m)))
    return {"bars": bars, "target": target, "kwargs": kwargs, "atr": atr, "rng": rng}


def _run(sc: dict, **override: object):
    spec = make_spec(**{**sc["kwargs"], **override})
    return simulate(sc["bars"], sc["target"], spec, sc["atr"])


@SETTINGS
@given(scenarios())
def test_cash_plus_positions_is_equity_and_cash_never_negative(sc: dict) -> None:
    res = _run(sc)
    marked = res.cash + (res.positions * sc["bars"].close).sum(axis=1)
    np.testing.assert_allclose(marked, res.equity, rtol=1e-9, atol=1e-9)
    f = res.fills
    # Every purchase is paid from cash; covering a short that rose sells longs first (margin
    # call). Only a wiped-out account (liquidated, debt written off) could have gone below.
    assert (res.cash >= 0.0).all()
    assert (res.positions[-1] == 0).all()  # everything closed at the end
    assert res.final_capital == pytest.approx(res.cash[-1])
    wiped = np.flatnonzero(res.equity <= 0.0)
    if wiped.size:
        # a short squeeze wiped the account out: it stops at zero (the debt is written off,
        # as backtesting.py does) and trades no more. What was still open is liquidated at
        # that close; a cover that itself left the account in debt leaves nothing to liquidate
        first = int(wiped[0])
        assert (res.equity[first:] == 0.0).all()
        assert (f[:, core.LOG_BAR] <= first).all()
        liquidations = f[f[:, core.LOG_REASON] == core.REASON_LIQUIDATION, core.LOG_BAR]
        assert (liquidations == first).all()
        return
    # the fill log accounts for every cent: buys cost, sells pay, both less commission
    flow = np.where(
        f[:, core.LOG_DIRECTION] > 0,
        -(f[:, core.LOG_SHARES] * f[:, core.LOG_PRICE] + f[:, core.LOG_COMMISSION]),
        f[:, core.LOG_SHARES] * f[:, core.LOG_PRICE] - f[:, core.LOG_COMMISSION],
    )
    assert res.cash[-1] == pytest.approx(res.initial_capital + flow.sum(), rel=1e-9, abs=1e-6)
    # realised pnl adds up to the gain (only closed round trips remain)
    assert res.trade_pnls.sum() == pytest.approx(
        res.final_capital - res.initial_capital, rel=1e-9, abs=1e-6
    )


@SETTINGS
@given(scenarios(), st.data())
def test_no_look_ahead(sc: dict, data: st.DataObject) -> None:
    bars: Bars = sc["bars"]
    n, m = bars.close.shape
    cut = data.draw(st.integers(0, n - 2))
    res = _run(sc)
    # a different future: new bars and new wishes after `cut`
    other = random_bars(sc["rng"], n, m, vol=0.1)
    keep = np.arange(n)[:, None] <= cut

    def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(keep, a, b)

    hi = np.maximum(mix(bars.high, other.high), mix(bars.close, other.close))
    changed = Bars(
        open=mix(bars.open, other.open),
        high=np.maximum(hi, mix(bars.open, other.open)),
        low=np.minimum(
            mix(bars.low, other.low),
            np.minimum(mix(bars.open, other.open), mix(bars.close, other.close)),
        ),
        close=mix(bars.close, other.close),
    )
    np.testing.assert_array_equal(changed.close[: cut + 1], bars.close[: cut + 1])
    target = mix(sc["target"], sc["rng"].choice([np.nan, 1.0, -1.0, 0.0], size=(n, m)))
    atr = mix(sc["atr"], np.abs(sc["rng"].normal(2.0, 0.5, (n, m))))
    alt = simulate(changed, target, make_spec(**sc["kwargs"]), atr)
    np.testing.assert_array_equal(alt.equity[: cut + 1], res.equity[: cut + 1])
    np.testing.assert_array_equal(alt.cash[: cut + 1], res.cash[: cut + 1])
    np.testing.assert_array_equal(alt.positions[: cut + 1], res.positions[: cut + 1])
    before = res.fills[res.fills[:, core.LOG_BAR] <= cut]
    alt_before = alt.fills[alt.fills[:, core.LOG_BAR] <= cut]
    np.testing.assert_array_equal(alt_before, before)


@SETTINGS
@given(scenarios(max_symbols=1), st.sampled_from(["next_open", "close"]))
def test_zero_cost_buy_and_hold_follows_the_price(sc: dict, fill: str) -> None:
    bars: Bars = sc["bars"]
    spec = make_spec(initial_capital=10_000.0, fractional=True, fill=fill)
    res = simulate(bars, np.ones_like(bars.close), spec)
    c = bars.close[:, 0]
    if fill == "close":
        expected = 10_000.0 * c / c[0]
    else:
        expected = np.concatenate(([10_000.0], 10_000.0 * c[1:] / bars.open[1, 0]))
    np.testing.assert_allclose(res.equity, expected, rtol=1e-12)


@SETTINGS
@given(scenarios())
def test_costs_never_increase_equity(sc: dict) -> None:
    # The same fills with and without costs: share counts fixed, cash ample, no stops
    # (stop levels move with the slippage-adjusted entry price).
    base = {
        **sc["kwargs"],
        "initial_capital": 1e9,
        "size_method": "fixed_shares",
        "size_value": 7.0,
        "stop_loss": None,
        "take_profit": None,
    }
    free = simulate(
        sc["bars"],
        sc["target"],
        make_spec(
            **{
                **base,
                "commission": 0.0,
                "commission_rate": 0.0,
                "min_commission": 0.0,
                "slippage": 0.0,
            }
        ),
    )
    costly = simulate(sc["bars"], sc["target"], make_spec(**base))
    cols = [core.LOG_BAR, core.LOG_SYMBOL, core.LOG_DIRECTION, core.LOG_SHARES]
    np.testing.assert_array_equal(costly.fills[:, cols], free.fills[:, cols])
    assert (costly.equity <= free.equity * (1 + 1e-12)).all()


@SETTINGS
@given(scenarios(max_symbols=1))
def test_the_sweep_kernel_applies_the_same_rules(sc: dict) -> None:
    bars: Bars = sc["bars"]
    spec = make_spec(**sc["kwargs"])
    res = simulate(bars, sc["target"], spec, sc["atr"])
    stats = np.empty(N_STATS)
    returns = np.empty(bars.n_bars)
    n_blocks = 4
    blocks = np.empty((2, n_blocks + 1))
    vec = [np.ascontiguousarray(a[:, 0]) for a in (bars.open, bars.high, bars.low, bars.close)]
    simulate_one_nb(
        *vec,
        np.ascontiguousarray(sc["target"][:, 0]),
        vec[3],
        vec[3],
        False,
        np.ascontiguousarray(sc["atr"][:, 0]),
        spec,
        0.0,
        stats,
        returns,
        blocks,
    )
    np.testing.assert_allclose(returns, res.returns, rtol=1e-12, atol=1e-15)
    # the block sums: the leading bars, then n_blocks blocks of n // n_blocks bars
    size = bars.n_bars // n_blocks
    cuts = np.r_[0, bars.n_bars - size * n_blocks + size * np.arange(n_blocks + 1)]
    for j in range(n_blocks + 1):
        part = res.returns[cuts[j] : cuts[j + 1]]
        assert blocks[0, j] == pytest.approx(part.sum(), rel=1e-9, abs=1e-12)
        assert blocks[1, j] == pytest.approx((part * part).sum(), rel=1e-9, abs=1e-12)
    assert stats[STAT_FINAL_CAPITAL] == pytest.approx(res.final_capital, rel=1e-12)
    assert stats[STAT_TRADES] == res.n_trades
    assert stats[STAT_REJECTED] == res.n_rejected
    assert stats[STAT_EXPOSURE] == pytest.approx(res.exposure)
    if res.n_trades:
        assert stats[STAT_WIN_RATE] == pytest.approx((res.trade_pnls > 0).mean())


@SETTINGS
@given(scenarios(max_symbols=1))
def test_the_sweep_kernel_on_lines_trades_their_crossovers(sc: dict) -> None:
    # the sweep computes a crossover's wishes on the fly from two lines (its own compiled
    # variant); they must be the wishes crossover_target_nb writes, with every setting
    bars: Bars = sc["bars"]
    rng = sc["rng"]
    spec = make_spec(**sc["kwargs"])
    vec = [np.ascontiguousarray(a[:, 0]) for a in (bars.open, bars.high, bars.low, bars.close)]
    n = bars.n_bars
    fast = vec[3] * np.exp(rng.normal(0.0, 0.02, n))
    slow = vec[3] * np.exp(rng.normal(0.0, 0.02, n))
    fast[: rng.integers(0, 4)] = np.nan  # a line still warming up
    atr = np.ascontiguousarray(sc["atr"][:, 0])
    out = []
    for lines in (True, False):
        target = vec[3] if lines else crossover_target_nb(fast, slow, True)
        stats, returns, blocks = np.empty(N_STATS), np.empty(n), np.empty((2, 3))
        simulate_one_nb(*vec, target, fast, slow, lines, atr, spec, 1e-4, stats, returns, blocks)
        out.append((stats, returns, blocks))
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sma_crossover", {"fast": 5, "slow": 20, "allow_short": True}),
        ("mean_reversion", {"allow_short": True}),
        ("macd_trend", {"allow_short": True}),
        ("buy_and_hold", {}),
    ],
)
def test_strategies_do_not_look_ahead(name: str, params: dict) -> None:
    df = load_frame("AAPL").iloc[-600:]
    bars = frame_bars(df)
    full = build_targets(name, params, bars)
    rng = np.random.default_rng(5)
    for cut in (50, 200, 399, 598):
        scaled = bars.close.copy()
        scaled[cut + 1 :] *= rng.uniform(0.5, 1.5, (scaled.shape[0] - cut - 1, 1))
        changed = Bars(open=scaled, high=scaled, low=scaled, close=scaled)
        part = build_targets(name, params, changed)
        np.testing.assert_array_equal(part[: cut + 1], full[: cut + 1])
    assert np.isfinite(full).any()  # the strategy did trade
