"""Sweeps of strategies written in the language: the parallel postfix path
(``language.batch``) gives every trial the serial path's exact results (``build_many``'s
targets through the target sweep), with stops, sizing, costs and fills varied, and
``run_batch`` falls back to the serial path above the leaf bound."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from services.backtest.config import (
    BacktestConfig,
    VolatilityTarget,
    atr_matrix,
    strategy_definition,
)
from services.backtest.engine.analysis import SweepResult
from services.backtest.engine.postfix import BINARY, UNARY, Op
from services.backtest.grid import Combos
from services.backtest.language import batch as batch_module
from services.backtest.language.batch import compile_batch
from services.backtest.language.program import Evaluation, ParamDecl, bars_of, compile_program
from services.backtest.optimize import TrialBatch, run_batch
from tests.unit.backtest.conftest import frame_bars, load_frame

UP = "crosses_above(sma(close, $fast), sma(close, $slow))"
DOWN = "crosses_below(sma(close, $fast), sma(close, $slow))"
STRATEGIES: dict[str, dict[str, Any]] = {
    "sma cross, long and short": {
        "rules": {"entry_long": UP, "exit_long": DOWN, "entry_short": DOWN, "exit_short": UP},
        "params": {"fast": {"default": 10, "min": 2}, "slow": {"default": 30, "min": 3}},
        "grid": {"fast": [5, 10, 20], "slow": [30, 50]},
    },
    "rsi trend filter": {
        "rules": {
            "entry_long": "rsi(close, $n) < $lo and close > sma(close, $trend)",
            "exit_long": "rsi(close, $n) > 100 - $lo or close < lowest(low, 20) * 1.01",
        },
        "params": {
            "n": {"default": 14, "min": 2},
            "lo": {"default": 30, "min": 5, "max": 50},
            "trend": {"default": 200, "min": 10},
        },
        "grid": {"n": [7, 14], "lo": [25, 30, 40.5], "trend": [50, 200]},
    },
    "breakout, nested windows, arithmetic": {
        "rules": {
            "entry_long": "close > lag(highest(high, $n), 1) and volume > sma(volume, 20)",
            "exit_long": "close < lag(lowest(low, $n / 2), 1) or not (abs(roc(close, 5)) < $k)",
            "entry_short": "crosses_below(ema(rsi(close, 14), $n), 50 - $k / 2)",
            "exit_short": "max(close, open) - min(close, open) > 2 * atr(14) or -close > -50",
        },
        "params": {"n": {"default": 20, "min": 2}, "k": {"default": 8}},
        "grid": {"n": [10, 20, 30, 40], "k": [4.0, 8.0, 0.0]},
    },
    "macd cross with a volume filter": {
        "rules": {
            "entry_long": "crosses_above(macd(close, $fast, $slow), "
            "macd_signal(close, $fast, $slow, 9)) and volume >= sma(volume, 50)",
            "exit_long": "crosses_below(macd(close, $fast, $slow), "
            "macd_signal(close, $fast, $slow, 9)) or close != close or 1 == 2",
        },
        "params": {"fast": {"default": 12, "min": 2}, "slow": {"default": 26, "min": 3}},
        "grid": {"fast": [8, 12], "slow": [21, 26, 35]},
    },
    "parameters only, no series": {
        "rules": {"entry_long": "$on > 0.5", "exit_long": "not ($on > 0.5) or false"},
        "params": {"on": {"default": 1}},
        "grid": {"on": [0.0, 1.0]},
    },
    "constant conditions and scalar crosses": {
        "rules": {
            "entry_long": "crosses_above(close, $level) or $level > 1000",
            "exit_long": "crosses_below(sma(close, 5), $level * 0.95) and 1 < 2",
        },
        "params": {"level": {"default": 40}},
        "grid": {"level": [30.0, 40.0, 45.5, 2000.0]},
    },
}
RUNS: dict[str, dict[str, Any]] = {
    "all in, next open": {},
    "stops, costs, fractional": {
        "stop_loss": 0.05,
        "take_profit": 0.1,
        "commission_rate": 0.001,
        "commission": 0.005,
        "min_commission": 1.0,
        "slippage": 0.0005,
        "fractional_shares": True,
    },
    "volatility target, at the close": {
        "position_size": {"method": "volatility_target", "annual_vol": 0.15, "atr_period": 20},
        "fill": "close",
        "take_profit": 0.08,
    },
    "percent of equity, warm-up": {
        "position_size": {"method": "percent_equity", "value": 0.5},
        "warmup_period": 250,
        "stop_loss": 0.03,
    },
}


def _grid(grid: dict[str, list[float]]) -> Combos:
    names = list(grid)
    mesh = np.meshgrid(*(grid[n] for n in names), indexing="ij")
    return Combos(
        {n: [v.item() for v in m.ravel()] for n, m in zip(names, mesh, strict=True)}, mesh[0].size
    )


def _batch(strategy: dict[str, Any], run: dict[str, Any], keep_returns: bool) -> TrialBatch:
    df = load_frame("KO").iloc[-1500:]
    bars = replace(frame_bars(df), volume=df["volume"].to_numpy())
    config = BacktestConfig.model_validate(
        {
            "symbol": "KO",
            "start_date": "2000-01-01",
            "end_date": "2030-01-01",
            "initial_capital": 10_000,
            "warmup_period": 0,
            "strategy": {"rules": strategy["rules"], "params": strategy["params"]},
            **run,
        }
    )
    d, params = strategy_definition(config.strategy)
    ps = config.position_size
    return TrialBatch(
        bars=bars,
        strategy=d,
        fixed=params.model_dump(),
        combos=_grid(strategy["grid"]),
        spec=config.to_spec(),
        risk_free_rate=0.02,
        keep_returns=keep_returns,
        atr_period=ps.atr_period if isinstance(ps, VolatilityTarget) else None,
        n_blocks=8,
    )


def _serial(task: TrialBatch, monkeypatch: pytest.MonkeyPatch) -> SweepResult:
    """Return ``run_batch``'s serial path: ``build_many``'s targets through the target sweep."""
    with monkeypatch.context() as m:
        m.setattr(batch_module, "rule_inputs", lambda *args: None)  # as above the bound
        assert _sweep_many(task) is None, "the parallel path ran"
        return run_batch(task)


def _parallel(task: TrialBatch) -> SweepResult:
    """Return the parallel path's sweep (failing if it declines)."""
    got = _sweep_many(task)
    assert got is not None, "the parallel path declined"
    return got


def _sweep_many(task: TrialBatch) -> SweepResult | None:
    d = task.strategy
    assert not isinstance(d, str) and d.sweep_many is not None
    atr = atr_matrix(task.bars, task.atr_period)[:, 0] if task.atr_period else None
    how = {"risk_free_rate": task.risk_free_rate, "keep_returns": task.keep_returns}
    return d.sweep_many(
        task.bars, task.fixed, task.combos, task.spec, **how, n_blocks=task.n_blocks, atr=atr
    )


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_trial_equals_the_serial_path(
    name: str, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _batch(STRATEGIES[name], RUNS[run], keep_returns=True)
    serial, parallel = _serial(task, monkeypatch), _parallel(task)
    np.testing.assert_array_equal(run_batch(task).stats, parallel.stats)
    as_dicts = replace(task, combos=list(task.combos))  # as the winner's rerun passes them
    np.testing.assert_array_equal(_parallel(as_dicts).stats, parallel.stats)
    assert serial.stats.shape == parallel.stats.shape == (len(task.combos), serial.stats.shape[1])
    np.testing.assert_array_equal(parallel.stats, serial.stats)
    np.testing.assert_array_equal(parallel.blocks, serial.blocks)
    np.testing.assert_array_equal(parallel.returns, serial.returns)
    trades = serial.column("total_trades")
    assert np.all(trades[~np.isnan(trades)] >= 0)


def test_the_trials_trade_and_differ() -> None:
    """The comparison above is not between two empty sweeps."""
    task = _batch(STRATEGIES["sma cross, long and short"], {}, keep_returns=False)
    stats = _parallel(task).stats
    trades = SweepResult(task.combos, stats, np.empty((0, 0)), np.empty((0, 0))).column(
        "total_trades"
    )
    assert trades.min() > 0
    assert len(np.unique(stats[:, 0])) > 1


def test_the_parallel_path_declines_above_the_leaf_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _batch(STRATEGIES["rsi trend filter"], {}, keep_returns=False)
    n = task.bars.n_bars  # leaves: rsi for 2 `$n`, sma for 2 `$trend`, lowest, close
    monkeypatch.setattr(batch_module, "MAX_LEAF_CELLS", 6 * n)
    assert _sweep_many(task) is not None
    monkeypatch.setattr(batch_module, "MAX_LEAF_CELLS", 6 * n - 1)
    assert _sweep_many(task) is None


def test_a_window_out_of_range_raises_the_serial_paths_error() -> None:
    strategy = {
        "rules": {"entry_long": "close > sma(close, $n * 100)"},
        "params": {"n": {"default": 2, "min": 1}},
        "grid": {"n": [2.0, 50.0, 200.0]},
    }
    task = _batch(strategy, {}, keep_returns=False)
    with pytest.raises(ValueError, match="needs n from 1 to 10000 bars"):
        run_batch(task)


def test_each_leaf_is_computed_once_per_binding_and_the_glue_is_postfix() -> None:
    program = compile_program(
        [("entry_long", UP), ("exit_long", DOWN), ("entry_short", DOWN), ("exit_short", UP)],
        [ParamDecl("fast", 10, 2), ParamDecl("slow", 30, 3)],
    )
    b = compile_batch(program)
    assert [n.kind for n in b.leaves] == ["call", "call"]
    ops = [Op(o) for o in b.code.ops]
    assert ops == [Op.LEAF, Op.LEAF, Op.CROSSES_ABOVE, Op.STORE] * 1 + [
        Op.LEAF,
        Op.LEAF,
        Op.CROSSES_BELOW,
        Op.STORE,
    ]
    assert b.code.slots.tolist() == [0, 1, 1, 0] and b.code.n_rules == 2
    assert UNARY.isdisjoint(BINARY)
    df = load_frame("KO").iloc[-600:]
    series = bars_of(*(df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
    combos = _grid({"fast": [5, 10], "slow": [30, 40, 50]})
    inputs = batch_module.rule_inputs(b, Evaluation(series), {"fast": 10, "slow": 30}, combos)
    assert inputs is not None
    assert inputs.leaves.shape == (2 + 3, 600)  # two fast windows, three slow ones
    assert inputs.ready.tolist() == [29, 39, 49, 29, 39, 49]


def test_a_nested_indicator_warms_up_the_same_from_a_shared_evaluation() -> None:
    """An indicator found in the memo still counts the warm-up of those below it."""
    program = compile_program(
        [("entry_long", "sma(rsi(close, $n), 3) < 40")], [ParamDecl("n", 14, 2)]
    )
    df = load_frame("KO").iloc[-300:]
    series = bars_of(*(df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
    shared_ev = Evaluation(series)
    first = program.rules_of(shared_ev, {"n": 30})[1]
    again = program.rules_of(shared_ev, {"n": 30})[1]
    fresh = program.rules_of(Evaluation(series), {"n": 30})[1]
    assert first == again == fresh == 30 + 2
