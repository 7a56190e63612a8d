"""The strategy language: errors a model can fix, normal text, values equal to the market's
kernels, identical fills for the built-ins written as rules, and no look-ahead (hypothesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.backtest.config import BacktestConfig, simulate_config, strategy_definition
from services.backtest.engine.runner import Bars
from services.backtest.expressions import InlineStrategy
from services.backtest.language.functions import FUNCTIONS
from services.backtest.language.program import (
    Evaluation,
    LanguageError,
    ParamDecl,
    bars_of,
    compile_program,
)
from shared.quant.kernels import atr_nb, macd_nb, rsi_nb, sma_nb, stoch_nb, willr_nb
from tests.unit.backtest.conftest import load_frame

FAST_SLOW = [ParamDecl("fast", 10, 2, 100), ParamDecl("slow", 30, 5, 300)]


def _error(text: str, params: list[ParamDecl] | None = None, rule: str = "entry_long") -> str:
    with pytest.raises(LanguageError) as e:
        compile_program([(rule, text)], params or [])
    return str(e.value)


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("rsl(close, 14) < 30", [], "entry_long 1:1: unknown function `rsl`; did you mean `rsi`?"),
        (
            "lag(close, -1) > close",
            [],
            "entry_long 1:12: `lag` needs n >= 0 (no look into the future)",
        ),
        (
            "sma(close, $fast) > close",
            [],
            "entry_long 1:12: `$fast` is used but not declared in params",
        ),
        ("close > sma(clse, 3)", [], "did you mean `close`?"),
        ("rsi(close) < 30", [], "`rsi` takes 2 arguments (rsi(x, n)), got 1"),
        ("close > ", [], "entry_long 1:9: the rule ends too early; expected"),
        ("1 < close < 2", [], "comparisons do not chain"),
        ("close", [], "entry_long must be a condition"),
        ("sma(close, 2.5) > close", [], "a whole number of bars"),
        ("close > 1 and sma(close, 5)", [], "`and` joins conditions"),
        ("macd(close, 26, 12) > 0", [], "needs fast < slow"),
        ("close # 3", [], "entry_long 1:7: unexpected character `#`"),
    ],
)
def test_errors_name_the_rule_position_and_the_fix(
    text: str, params: list[ParamDecl], message: str
) -> None:
    assert message in _error(text, params)


def test_a_param_used_as_a_lag_may_not_go_negative() -> None:
    message = _error("lag(close, $k) < close", [ParamDecl("k", 1, -5, 5)])
    assert "`$k` is n of `lag`: its min (-5) must be >= 0 (no look into the future)" in message


def test_normal_text_is_the_cache_key() -> None:
    a = compile_program(
        [("entry_long", "close>sma( close,$fast )and(rsi(close,14)<30)")], FAST_SLOW[:1]
    )
    b = compile_program(
        [("entry_long", "close > sma(close, $fast) and rsi(close, 14) < 30")], FAST_SLOW[:1]
    )
    assert a is b
    assert a.normal == {"entry_long": "close > sma(close, $fast) and rsi(close, 14) < 30"}
    # parentheses that change the meaning stay
    c = compile_program([("entry_long", "close - (open - low) > (close - open) - low")], [])
    assert c.normal["entry_long"] == "close - (open - low) > close - open - low"


def test_warmup_is_the_longest_chain_of_windows() -> None:
    p = compile_program(
        [("entry_long", "sma(rsi(close, 14), 10) > 50 and close > sma(close, $slow)")],
        [ParamDecl("slow", 20, 5, 300)],
    )
    assert p.warmup() == 14 + 9  # rsi's 14, then sma's 9 more; sma(close, 20) needs 19
    assert p.warmup({"slow": 200}) == 199


def test_functions_equal_the_market_kernels() -> None:
    df = load_frame("AAPL").iloc[-1500:]
    b = bars_of(df.open, df.high, df.low, df.close, df.volume)
    c, h, lo = b["close"], b["high"], b["low"]

    def call(name: str, *args: Any) -> np.ndarray:
        return FUNCTIONS[name].compute(b, args)

    np.testing.assert_array_equal(call("sma", c, 20), sma_nb(c, 20))
    np.testing.assert_array_equal(call("rsi", c, 14), rsi_nb(c, 14))
    np.testing.assert_array_equal(call("macd", c, 12, 26), macd_nb(c, 12, 26, 9)[0])
    np.testing.assert_array_equal(call("macd_signal", c, 12, 26, 5), macd_nb(c, 12, 26, 5)[1])
    np.testing.assert_array_equal(call("atr", 14), atr_nb(h, lo, c, 14))
    np.testing.assert_array_equal(call("williams_r", 14), willr_nb(h, lo, c, 14))
    np.testing.assert_array_equal(call("stoch_k", 14), stoch_nb(h, lo, c, 14, 3, 3)[0])
    s = pd.Series(c)
    np.testing.assert_allclose(call("highest", c, 20), s.rolling(20).max(), equal_nan=True)
    np.testing.assert_allclose(call("lowest", c, 20), s.rolling(20).min(), equal_nan=True)
    np.testing.assert_allclose(call("std", c, 20), s.rolling(20).std(ddof=0), rtol=1e-9)
    np.testing.assert_allclose(call("roc", c, 10), s.pct_change(10) * 100, rtol=1e-12)
    np.testing.assert_array_equal(call("lag", c, 3)[3:], c[:-3])


# ---- the four built-ins written as rules: identical fills -------------------------------

X = "crosses_above(sma(close, $fast), sma(close, $slow))"
Y = "crosses_below(sma(close, $fast), sma(close, $slow))"
M_UP = "crosses_above(macd(close, $fast, $slow), macd_signal(close, $fast, $slow, $signal))"
M_DOWN = "crosses_below(macd(close, $fast, $slow), macd_signal(close, $fast, $slow, $signal))"
LOW = "close < bb_lower(close, $bb, $k) and rsi(close, $r) < $lo"
HIGH = "close > bb_upper(close, $bb, $k) and rsi(close, $r) > $hi"


def _p(**values: float) -> dict[str, dict[str, float]]:
    return {k: {"default": v} for k, v in values.items()}


BUILTINS_AS_RULES = [
    ({"name": "buy_and_hold"}, {"rules": {"entry_long": "true"}}),
    (
        {"name": "sma_crossover", "params": {"fast": 10, "slow": 30, "allow_short": True}},
        {
            "rules": {"entry_long": X, "exit_long": Y, "entry_short": Y, "exit_short": X},
            "params": _p(fast=10, slow=30),
        },
    ),
    (
        {"name": "sma_crossover", "params": {"fast": 5, "slow": 50}},
        {"rules": {"entry_long": X, "exit_long": Y}, "params": _p(fast=5, slow=50)},
    ),
    (
        {"name": "macd_trend", "params": {"allow_short": True}},
        {
            "rules": {
                "entry_long": M_UP,
                "exit_long": M_DOWN,
                "entry_short": M_DOWN,
                "exit_short": M_UP,
            },
            "params": _p(fast=12, slow=26, signal=9),
        },
    ),
    (
        {"name": "mean_reversion", "params": {"allow_short": True}},
        {
            "rules": {
                "entry_long": LOW,
                "exit_long": "close >= sma(close, $bb)",
                "entry_short": HIGH,
                "exit_short": "close <= sma(close, $bb)",
            },
            "params": _p(bb=20, k=2.0, r=14, lo=30, hi=70),
        },
    ),
]


def _bars(df: pd.DataFrame) -> Bars:
    return Bars(
        open=df["open"].to_numpy(),
        high=df["high"].to_numpy(),
        low=df["low"].to_numpy(),
        close=df["close"].to_numpy(),
        volume=df["volume"].to_numpy(),
        index=df.index.to_numpy(dtype="datetime64[ns]"),
    )


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "KO", "NVDA", "XOM"])
@pytest.mark.parametrize("warmup", [0, 60])
@pytest.mark.parametrize(("native", "rules"), BUILTINS_AS_RULES)
def test_builtins_written_as_rules_give_identical_fills(
    symbol: str, warmup: int, native: dict[str, Any], rules: dict[str, Any]
) -> None:
    bars = _bars(load_frame(symbol))
    base = {
        "symbol": symbol,
        "start_date": "1990-01-01",
        "end_date": "2030-01-01",
        "warmup_period": warmup,
        "commission_rate": 0.001,
    }
    a = simulate_config(BacktestConfig.model_validate({**base, "strategy": native}), bars)
    b = simulate_config(BacktestConfig.model_validate({**base, "strategy": rules}), bars)
    fills = a.fills_frame()
    assert len(fills) >= 2
    pd.testing.assert_frame_equal(fills, b.fills_frame())
    assert a.final_capital == b.final_capital


# ---- causality: decisions before a date do not depend on later bars ---------------------

SERIES = st.sampled_from(["open", "high", "low", "close", "volume"])
WINDOWS = st.integers(min_value=1, max_value=30)


def _series_expr(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(SERIES, st.floats(0.5, 200).map(lambda x: f"{x:.3f}"))
    if depth <= 0:
        return leaf
    sub = _series_expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(
            st.sampled_from(["sma", "ema", "rsi", "highest", "lowest", "std", "roc", "lag"]),
            sub.filter(lambda s: not s[0].isdigit()),
            WINDOWS,
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(
            st.sampled_from(["atr", "stoch_k", "williams_r"]), WINDOWS.map(lambda n: n + 1)
        ).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(st.sampled_from(["abs"]), sub).map(lambda t: f"abs({t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(sub, st.integers(12, 20), st.integers(21, 40)).map(
            lambda t: f"macd({t[0]}, {t[1]}, {t[2]})"
        ),
        st.tuples(sub, WINDOWS.map(lambda n: n + 1), st.floats(0.5, 3)).map(
            lambda t: f"bb_upper({t[0]}, {t[1]}, {t[2]:.2f})"
        ),
    )


def _condition(depth: int) -> st.SearchStrategy[str]:
    s = _series_expr(2)
    atom = st.one_of(
        st.tuples(s, st.sampled_from(["<", "<=", ">", ">=", "!="]), s).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(st.sampled_from(["crosses_above", "crosses_below"]), s, s).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
    )
    if depth <= 0:
        return atom
    sub = _condition(depth - 1)
    return st.one_of(
        atom,
        st.tuples(sub, st.sampled_from(["and", "or"]), sub).map(
            lambda t: f"({t[0]}) {t[1]} ({t[2]})"
        ),
        sub.map(lambda c: f"not ({c})"),
    )


def _random_bars(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.01, n)))
    volume = rng.integers(1_000, 100_000, n).astype(float)
    return bars_of(open_, high, low, close, volume)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.fixed_dictionaries(
        {"entry_long": _condition(2)},
        optional={
            "exit_long": _condition(1),
            "entry_short": _condition(1),
            "exit_short": _condition(1),
        },
    ),
    seed=st.integers(0, 2**16),
    cut=st.integers(5, 299),
)
def test_decisions_before_a_date_ignore_later_bars(
    rules: dict[str, str], seed: int, cut: int
) -> None:
    program = compile_program(list(rules.items()), [])
    full = _random_bars(seed, 300)
    cut_bars = {k: v[:cut].copy() for k, v in full.items()}
    with np.errstate(all="ignore"):  # as the strategy's builders run it
        whole = program.decide(Evaluation(full), {})
        head = program.decide(Evaluation(cut_bars), {})
    np.testing.assert_array_equal(whole[:cut], head)


def test_a_saved_style_inline_strategy_sweeps_its_params() -> None:
    strategy = InlineStrategy.model_validate(
        {
            "rules": {"entry_long": X, "exit_long": Y},
            "params": {
                "fast": {"default": 10, "min": 2, "max": 100},
                "slow": {"default": 30, "min": 5, "max": 300},
            },
        }
    )
    config = BacktestConfig.model_validate(
        {
            "symbol": "KO",
            "start_date": "2000-01-01",
            "end_date": "2020-01-01",
            "strategy": strategy.model_dump(),
        }
    )
    d, params = strategy_definition(config.strategy)
    assert d.params.model_fields["fast"].annotation is int
    ok = d.valid(
        {"fast": np.array([1.0, 5.0, 40.0]), "slow": np.array([30.0, 30.0, 30.0])},
        params.model_dump(),
    )
    assert ok is not None and ok.tolist() == [False, True, True]
    bars = _bars(load_frame("KO"))
    many = d.build_many(
        bars, params.model_dump(), [{"fast": 5, "slow": 30}, {"fast": 10, "slow": 30}]
    )  # type: ignore[misc]
    one = d.build(bars, d.parse({"fast": 10, "slow": 30}))[:, 0]
    np.testing.assert_array_equal(many[1], one)
