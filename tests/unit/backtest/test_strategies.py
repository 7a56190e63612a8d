"""Strategies: their targets against indicators computed independently, and their schemas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from pydantic import ValidationError

from services.backtest.strategies import STRATEGIES, build_targets, get_strategy
from tests.unit.backtest.conftest import frame_bars, load_frame


@pytest.fixture(scope="module")
def bars():
    return frame_bars(load_frame("KO").iloc[-1500:])


def _crosses(fast: np.ndarray, slow: np.ndarray, short: bool) -> np.ndarray:
    """backtesting.py's crossover rule, written with pandas shifts."""
    f, s = pd.Series(fast), pd.Series(slow)
    up = (f.shift() < s.shift()) & (f > s)
    down = (s.shift() < f.shift()) & (s > f)
    out = np.full(len(f), np.nan)
    out[up.to_numpy()] = 1.0
    out[down.to_numpy()] = -1.0 if short else 0.0
    return out


def test_sma_crossover_targets(bars) -> None:
    c = bars.close[:, 0]
    got = build_targets("sma_crossover", {"fast": 7, "slow": 25, "allow_short": True}, bars)
    want = _crosses(talib.SMA(c, 7), talib.SMA(c, 25), True)
    np.testing.assert_array_equal(got[:, 0], want)
    long_only = build_targets("sma_crossover", {"fast": 7, "slow": 25}, bars)
    np.testing.assert_array_equal(
        long_only[:, 0], _crosses(talib.SMA(c, 7), talib.SMA(c, 25), False)
    )


def test_macd_trend_targets(bars) -> None:
    c = bars.close[:, 0]
    line, signal, _ = talib.MACD(c, 12, 26, 9)
    got = build_targets("macd_trend", {"allow_short": True}, bars)
    np.testing.assert_array_equal(got[:, 0], _crosses(line, signal, True))


def test_mean_reversion_state_machine(bars) -> None:
    c = bars.close[:, 0]
    rsi = talib.RSI(c, 14)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    got = build_targets("mean_reversion", {"allow_short": True}, bars)[:, 0]
    state = 0.0
    for t in np.flatnonzero(~np.isnan(got)):
        new = got[t]
        if new == 1.0:
            assert c[t] < lower[t] and rsi[t] < 30 and state <= 0
        elif new == -1.0:
            assert c[t] > upper[t] and rsi[t] > 70 and state >= 0
        else:
            assert (state > 0 and c[t] >= middle[t]) or (state < 0 and c[t] <= middle[t])
        state = new
    assert (got == 1.0).sum() >= 3 and (got == -1.0).sum() >= 3
    # between signals the state holds: no missed entry while flat
    flat = True
    for t in range(len(c)):
        if not np.isnan(got[t]):
            flat = got[t] == 0.0
        elif flat and not np.isnan(rsi[t]) and c[t] < lower[t] and rsi[t] < 30:
            pytest.fail(f"missed a long entry at bar {t}")


def test_every_strategy_has_a_json_schema_and_defaults() -> None:
    for name, strategy in STRATEGIES.items():
        schema = strategy.params.model_json_schema()
        assert schema["type"] == "object"
        assert strategy.parse(None) == strategy.params()  # defaults are valid
        assert get_strategy(name) is strategy
    assert (
        STRATEGIES["sma_crossover"].params.model_json_schema()["properties"]["fast"]["minimum"] == 2
    )
    with pytest.raises(KeyError, match="known"):
        get_strategy("martingale")


@pytest.mark.parametrize("name", [n for n, d in STRATEGIES.items() if not d.needs_signals])
def test_the_vector_check_of_a_grid_agrees_with_the_parameter_model(name: str) -> None:
    # plan_search checks whole grids with StrategyDef.valid instead of validating each
    # combination: both must accept exactly the same combinations, at and across the bounds
    strategy = STRATEGIES[name]
    fields = {n: f for n, f in strategy.params.model_fields.items() if f.annotation in (int, float)}
    if not fields:
        return
    rng = np.random.default_rng(len(name))
    columns = {}
    for n, f in fields.items():
        edges = [
            getattr(b, a) for b in f.metadata for a in ("ge", "gt", "le", "lt") if hasattr(b, a)
        ]
        values = np.concatenate(
            [np.asarray(edges, dtype=float) + d for d in (-1.0, -0.5, 0.0, 0.5, 1.0)]
            + [rng.uniform(min(edges) - 5, max(edges) + 5, 200)]
        )
        if f.annotation is int:
            values = np.round(values)
        columns[n] = rng.choice(values, 3000)
    fixed = strategy.params().model_dump()
    ok = strategy.valid(columns, fixed)
    assert ok is not None
    expected = []
    for i in range(3000):
        combo = {
            n: (int(v[i]) if fields[n].annotation is int else float(v[i]))
            for n, v in columns.items()
        }
        try:
            strategy.parse({**fixed, **combo})
            expected.append(True)
        except ValidationError:
            expected.append(False)
    np.testing.assert_array_equal(ok, np.array(expected))
    assert 0 < ok.sum() < ok.size  # both kinds were drawn
