"""shared.quant: the indicator kernels agree with TA-Lib (the oracle) on every shared daily CSV."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from shared.quant import (
    INDICATORS,
    IndicatorParamError,
    compute,
    lookback,
    validate_params,
    warmup_bars,
)
from shared.quant import kernels as nb

DATA_DIR = Path(__file__).resolve().parents[4] / "shared" / "data" / "ohlcv" / "daily"
CSV_FILES = sorted(DATA_DIR.glob("*.csv"))
ATOL = 1e-8

NAMES = ("rsi", "macd", "bbands", "williams_r", "stochastic", "sma", "ema", "atr")
CUSTOM_PARAMS = [
    ("rsi", {"period": 2}),
    ("rsi", {"period": 50}),
    ("macd", {"fast": 3, "slow": 10, "signal": 1}),
    ("macd", {"fast": 5, "slow": 6, "signal": 2}),
    ("macd", {"fast": 20, "slow": 50, "signal": 30}),
    ("bbands", {"period": 2, "nbdev": 1.0}),
    ("bbands", {"period": 50, "nbdev": 0.5}),
    ("williams_r", {"period": 2}),
    ("williams_r", {"period": 100}),
    ("stochastic", {"k_period": 1, "k_smooth": 1, "d_period": 1}),
    ("stochastic", {"k_period": 5, "k_smooth": 1, "d_period": 7}),
    ("stochastic", {"k_period": 30, "k_smooth": 10, "d_period": 4}),
    ("sma", {"period": 2}),
    ("sma", {"period": 200}),
    ("ema", {"period": 2}),
    ("ema", {"period": 200}),
    ("atr", {"period": 1}),
    ("atr", {"period": 2}),
    ("atr", {"period": 50}),
]


@cache
def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (high, low, close) of one CSV as float64 arrays."""
    frame = pd.read_csv(path, usecols=["date", "high", "low", "close"])
    return tuple(frame[c].to_numpy(np.float64) for c in ("high", "low", "close"))


def oracle(name: str, params: dict, high, low, close) -> dict[str, np.ndarray]:
    """Return TA-Lib's outputs under our output names."""
    p = validate_params(name, params)
    if name == "rsi":
        ref = (talib.RSI(close, p["period"]),)
    elif name == "macd":
        ref = talib.MACD(close, p["fast"], p["slow"], p["signal"])
    elif name == "bbands":
        ref = talib.BBANDS(close, p["period"], p["nbdev"], p["nbdev"], 0)
    elif name == "williams_r":
        ref = (talib.WILLR(high, low, close, p["period"]),)
    elif name == "stochastic":
        ref = talib.STOCH(high, low, close, p["k_period"], p["k_smooth"], 0, p["d_period"], 0)
    elif name == "sma":
        ref = (talib.SMA(close, p["period"]),)
    elif name == "ema":
        ref = (talib.EMA(close, p["period"]),)
    else:
        ref = (talib.ATR(high, low, close, p["period"]),)
    return dict(zip(INDICATORS[name].outputs, ref, strict=True))


def assert_same(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol=ATOL, ctx=""):
    """Assert identical keys, lengths and NaN positions, and values within atol."""
    assert list(ours) == list(ref), ctx
    for key, expected in ref.items():
        got = ours[key]
        assert got.dtype == np.float64 and got.shape == expected.shape, (ctx, key)
        nan_got, nan_ref = np.isnan(got), np.isnan(expected)
        assert np.array_equal(nan_got, nan_ref), (
            f"{ctx} {key}: NaN at {np.flatnonzero(nan_got ^ nan_ref)[:5]}"
        )
        np.testing.assert_allclose(
            got[~nan_got], expected[~nan_ref], rtol=0, atol=atol, err_msg=f"{ctx} {key}"
        )


def run_both(name, params, high, low, close):
    """Return (ours, talib) for one indicator on one series."""
    ours = compute(name, params, high=high, low=low, close=close)
    return ours, oracle(name, params, high, low, close)


# --------------------------------------------------------------------------- real data


def test_data_folder_has_csvs():
    assert DATA_DIR.is_dir(), f"missing test data folder {DATA_DIR}"
    assert CSV_FILES, f"no CSV files in {DATA_DIR}"


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_talib_on_every_csv(path, name):
    high, low, close = load(path)
    ours, ref = run_both(name, {}, high, low, close)
    assert_same(ours, ref, ctx=f"{path.stem} {name}")
    assert int(np.isnan(next(iter(ours.values()))).sum()) == lookback(name, {})


@pytest.mark.parametrize(("name", "params"), CUSTOM_PARAMS, ids=str)
def test_custom_params_match_talib_on_every_csv(name, params):
    for path in CSV_FILES:
        high, low, close = load(path)
        ours, ref = run_both(name, params, high, low, close)
        assert_same(ours, ref, ctx=f"{path.stem} {name} {params}")
        nan_ref = np.isnan(next(iter(ref.values())))
        assert int(nan_ref.sum()) == lookback(name, params)


@pytest.mark.parametrize("name", NAMES)
def test_bare_kernels_equal_wrapper(name):
    high, low, close = load(DATA_DIR / "AAPL.csv")
    ours = compute(name, {}, high=high, low=low, close=close)
    p = validate_params(name, {})
    if name == "rsi":
        raw = (nb.rsi_nb(close, p["period"]),)
    elif name == "macd":
        raw = nb.macd_nb(close, p["fast"], p["slow"], p["signal"])
    elif name == "bbands":
        raw = nb.bbands_nb(close, p["period"], p["nbdev"], p["nbdev"])
    elif name == "williams_r":
        raw = (nb.willr_nb(high, low, close, p["period"]),)
    elif name == "stochastic":
        raw = nb.stoch_nb(high, low, close, p["k_period"], p["k_smooth"], p["d_period"])
    elif name == "sma":
        raw = (nb.sma_nb(close, p["period"]),)
    elif name == "ema":
        raw = (nb.ema_nb(close, p["period"]),)
    else:
        raw = (nb.atr_nb(high, low, close, p["period"]),)
    for key, arr in zip(INDICATORS[name].outputs, raw, strict=True):
        np.testing.assert_array_equal(arr, ours[key])


def test_moving_average_kernels_match_talib_outside_the_api_bounds():
    high, low, close = load(DATA_DIR / "GSPC.csv")
    for period in (1, 2, 12, 26, 200, 2000):
        assert_same({"ema": nb.ema_nb(close, period)}, {"ema": talib.EMA(close, period)})
        assert_same({"sma": nb.sma_nb(close, period)}, {"sma": talib.SMA(close, period)})
        assert_same(
            {"atr": nb.atr_nb(high, low, close, period)},
            {"atr": talib.ATR(high, low, close, period)},
        )


def test_kernels_take_positional_arrays_and_periods():
    """The names and argument order the backtest engine imports from shared.quant.kernels."""
    high, low, close = load(DATA_DIR / "KO.csv")
    assert nb.sma_nb(close, 10).shape == close.shape
    assert nb.ema_nb(close, 10).shape == close.shape
    assert nb.atr_nb(high, low, close, 14).shape == close.shape
    assert nb.rsi_nb(close, 14).shape == close.shape
    assert len(nb.bbands_nb(close, 20, 2.0, 2.0)) == 3
    assert len(nb.macd_nb(close, 12, 26, 9)) == 3


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_with_random_params_match_talib(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    close = 10 ** rng.uniform(-3, 4) * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    spread = close * rng.uniform(0, 0.03, n)
    high = close + spread * rng.uniform(0, 1, n)
    low = close - spread * rng.uniform(0, 1, n)
    flat = rng.integers(0, n - 30)
    high[flat : flat + 30] = low[flat : flat + 30] = close[flat : flat + 30] = close[flat]
    for name in NAMES:
        spec = INDICATORS[name]
        params = {
            k: (
                rng.integers(p.lo, min(p.hi, 60) + 1)
                if p.is_int
                else round(float(rng.uniform(p.lo, p.hi)), 2)
            )
            for k, p in spec.params.items()
        }
        if name == "macd":
            params["fast"], params["slow"] = sorted(rng.choice(np.arange(2, 61), 2, replace=False))
        ours, ref = run_both(name, params, high, low, close)
        scale = max(1.0, float(close.max()))  # price-unit outputs scale with the price level
        assert_same(ours, ref, atol=ATOL * scale, ctx=f"seed={seed} {name} {params}")


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(("name", "params"), [(n, {}) for n in NAMES] + CUSTOM_PARAMS, ids=str)
def test_short_inputs_are_all_nan(name, params):
    high, low, close = load(DATA_DIR / "MSFT.csv")
    lb = lookback(name, params)
    for n in sorted({0, 1, 2, lb - 1, lb, lb + 1, lb + 2} - {-1}):
        ours = compute(name, params, high=high[:n], low=low[:n], close=close[:n])
        for key, arr in ours.items():
            assert arr.shape == (n,)
            assert np.isnan(arr[:lb]).all(), (n, key)
            assert not np.isnan(arr[lb:]).any(), (n, key)
        if n:
            assert_same(ours, oracle(name, params, high[:n], low[:n], close[:n]), ctx=f"n={n}")


@pytest.mark.parametrize("price", [0.0005, 1.0, 123.456, 4796.56])
@pytest.mark.parametrize(("name", "params"), [(n, {}) for n in NAMES] + CUSTOM_PARAMS, ids=str)
def test_constant_prices(name, params, price):
    bars = np.full(300, price)
    ours, ref = run_both(name, params, bars, bars.copy(), bars.copy())
    assert_same(ours, ref, atol=ATOL * price, ctx=f"{name} {params} {price}")
    lb = lookback(name, params)
    if name in ("rsi", "williams_r", "stochastic", "atr"):
        # TA-Lib answers 0 when nothing moved / the range is empty, not NaN or 50.
        for arr in ours.values():
            assert (arr[lb:] == 0.0).all()
    elif name in ("sma", "ema"):
        np.testing.assert_allclose(ours[name][lb:], price, rtol=1e-14)
    elif name == "bbands":
        np.testing.assert_allclose(ours["upper"][lb:], price, rtol=1e-14)
        np.testing.assert_allclose(ours["lower"][lb:], price, rtol=1e-14)
    else:
        np.testing.assert_allclose(ours["histogram"][lb:], 0.0, atol=1e-12 * price)


def test_flat_stretch_and_equal_high_low_inside_real_data():
    high, low, close = (a.copy() for a in load(DATA_DIR / "KO.csv"))
    high[1000:1040] = low[1000:1040] = close[1000:1040] = close[1000]  # flat 40 bars
    high[2000:2100] = low[2000:2100]  # zero intraday range, prices still moving
    close[2000:2100] = low[2000:2100]
    for name, params in [(n, {}) for n in NAMES] + CUSTOM_PARAMS:
        ours, ref = run_both(name, params, high, low, close)
        assert_same(ours, ref, ctx=f"{name} {params}")


def test_leading_nans_are_skipped_like_talib():
    high, low, close = (a.copy() for a in load(DATA_DIR / "JPM.csv"))
    close[:7] = np.nan
    high[:11] = np.nan
    for name, params in [(n, {}) for n in NAMES] + CUSTOM_PARAMS:
        ours, ref = run_both(name, params, high, low, close)
        assert_same(ours, ref, ctx=f"{name} {params}")
    empty = compute("rsi", {}, close=np.full(20, np.nan))
    assert np.isnan(empty["rsi"]).all()


def test_inputs_are_cast_to_float64():
    high, low, close = load(DATA_DIR / "PG.csv")
    ref = oracle("stochastic", {}, high, low, close)
    as_lists = compute("stochastic", {}, high=high.tolist(), low=low.tolist(), close=list(close))
    strided = compute(
        "stochastic", {}, high=np.repeat(high, 2)[::2], low=low[::-1][::-1], close=close
    )
    assert_same(as_lists, ref)
    assert_same(strided, ref)
    ints = compute("rsi", {}, close=np.arange(100, 400, dtype=np.int64))
    assert_same(ints, oracle("rsi", {}, None, None, np.arange(100.0, 400.0)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="high"):
        compute("williams_r", {}, low=np.ones(30), close=np.ones(30))
    with pytest.raises(ValueError, match="bars"):
        compute("stochastic", {}, high=np.ones(30), low=np.ones(29), close=np.ones(30))
    with pytest.raises(ValueError, match="1-D"):
        compute("rsi", {}, close=np.ones((3, 30)))


# --------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize(
    ("name", "params"),
    [(n, {}) for n in NAMES]
    + [
        ("rsi", {"period": 2}),
        ("rsi", {"period": 30}),
        ("macd", {"fast": 5, "slow": 35, "signal": 20}),
        ("macd", {"fast": 3, "slow": 10, "signal": 1}),
        ("stochastic", {"k_period": 30, "k_smooth": 10, "d_period": 4}),
        ("sma", {"period": 200}),
        ("ema", {"period": 2}),
        ("ema", {"period": 200}),
        ("atr", {"period": 1}),
        ("atr", {"period": 50}),
    ],
    ids=str,
)
@pytest.mark.parametrize("symbol", ["GSPC", "NVDA", "GE"])
def test_warmup_bars_reproduces_full_history(name, params, symbol):
    high, low, close = load(DATA_DIR / f"{symbol}.csv")
    full = compute(name, params, high=high, low=low, close=close)
    w = warmup_bars(name, params)
    assert w >= lookback(name, params)
    for k in sorted({w, w + 1, 1500, 3000, len(close) - 50, len(close) - 1}):
        if k < w:
            continue  # a long EMA needs more warm-up than these early bars have
        part = compute(name, params, high=high[k - w :], low=low[k - w :], close=close[k - w :])
        window = {key: arr[w:] for key, arr in part.items()}
        assert_same(window, {key: arr[k:] for key, arr in full.items()}, ctx=f"k={k}")


def test_warmup_bars_values():
    rate = 13 / 14
    for name in ("bbands", "williams_r", "stochastic", "sma"):
        assert warmup_bars(name, {}) == lookback(name, {})
    assert warmup_bars("atr", {"period": 1}) == lookback("atr", {"period": 1}) == 1
    atr_extra = warmup_bars("atr", {}) - 14
    assert rate**atr_extra <= 1e-12 < rate ** (atr_extra - 1)
    ema_rate = 1 - 2 / 31
    ema_extra = warmup_bars("ema", {}) - 29
    assert ema_rate**ema_extra <= 1e-12 < ema_rate ** (ema_extra - 1)
    rsi_extra = warmup_bars("rsi", {}) - 14
    assert rate**rsi_extra <= 1e-12 < rate ** (rsi_extra - 1)
    assert warmup_bars("rsi", {}, tol=1e-6) < warmup_bars("rsi", {}) < warmup_bars("rsi", {}, 1e-15)
    assert warmup_bars("macd", {}) > lookback("macd", {}) + math.log(1e-12) / math.log(25 / 27)
    assert warmup_bars("macd", {"signal": 200}) > warmup_bars("macd", {})
    with pytest.raises(ValueError):
        warmup_bars("rsi", {}, tol=0.0)


# --------------------------------------------------------------------------- parameters


def test_registry_shape():
    assert tuple(INDICATORS) == NAMES
    assert tuple(INDICATORS["macd"].outputs) == ("macd", "signal", "histogram")
    assert tuple(INDICATORS["bbands"].outputs) == ("upper", "middle", "lower")
    assert tuple(INDICATORS["stochastic"].outputs) == ("k", "d")
    assert INDICATORS["williams_r"].inputs == ("high", "low", "close")
    assert INDICATORS["rsi"].inputs == ("close",)
    assert list(INDICATORS["stochastic"].params) == ["k_period", "k_smooth", "d_period"]
    nbdev = INDICATORS["bbands"].params["nbdev"]
    assert (nbdev.default, nbdev.lo, nbdev.hi) == (2.0, 0.1, 10.0)
    assert INDICATORS["atr"].inputs == ("high", "low", "close")
    assert INDICATORS["macd"].columns == ("macd", "macd_signal", "macd_histogram")


def test_every_entry_is_complete_and_self_consistent():
    routes = [spec.route.path for spec in INDICATORS.values() if spec.route]
    assert routes == ["rsi", "macd", "bollinger_bands", "williams_r"]
    assert [n for n, spec in INDICATORS.items() if spec.default] == list(NAMES[:5])
    for name, spec in INDICATORS.items():
        assert spec.name == name and spec.title and spec.definition
        assert spec.outputs and all(spec.outputs.values()), name
        for key, param in spec.params.items():
            assert param.lo <= param.default <= param.hi, (name, key)
            assert isinstance(param.lo, type(param.default)), (name, key)
            assert param.doc, (name, key)
        assert validate_params(name) == {k: p.default for k, p in spec.params.items()}
        lo = {k: p.lo for k, p in spec.params.items()}
        if name == "macd":
            lo["slow"] = lo["fast"] + 1
        assert lookback(name, lo) >= 0


def test_validate_params_fills_defaults_and_casts():
    assert validate_params("macd", None) == {"fast": 12, "slow": 26, "signal": 9}
    got = validate_params("macd", {"fast": "5", "signal": 3.0, "slow": np.int32(40)})
    assert got == {"fast": 5, "slow": 40, "signal": 3}
    assert all(type(v) is int for v in got.values())
    got = validate_params("bbands", {"nbdev": 1, "period": 10})
    assert got == {"period": 10, "nbdev": 1.0} and type(got["nbdev"]) is float
    assert list(validate_params("stochastic", {"d_period": 5})) == [
        "k_period",
        "k_smooth",
        "d_period",
    ]


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("macd", {"fast": 26, "slow": 26}, "macd_fast"),
        ("macd", {"fast": 30}, "macd_fast"),
        ("macd", {"slow": 1}, "macd_slow"),
        ("macd", {"signal": 0}, "macd_signal"),
        ("rsi", {"period": 1}, "rsi_period"),
        ("rsi", {"period": 1001}, "rsi_period"),
        ("rsi", {"period": 14.5}, "rsi_period"),
        ("rsi", {"period": "fourteen"}, "rsi_period"),
        ("rsi", {"period": True}, "rsi_period"),
        ("rsi", {"period": None}, "rsi_period"),
        ("rsi", {"length": 14}, "rsi_length"),
        ("bbands", {"nbdev": 0.05}, "bbands_nbdev"),
        ("bbands", {"nbdev": float("nan")}, "bbands_nbdev"),
        ("bbands", {"nbdev": 10.5}, "bbands_nbdev"),
        ("williams_r", {"period": 0}, "williams_r_period"),
        ("stochastic", {"k_period": 0}, "stochastic_k_period"),
        ("stochastic", {"k_smooth": 1001}, "stochastic_k_smooth"),
        ("stochastic", {"d_period": -3}, "stochastic_d_period"),
        ("sma", {"period": 1}, "sma_period"),
        ("ema", {"period": 1001}, "ema_period"),
        ("atr", {"period": 0}, "atr_period"),
        ("vwap", {}, "indicator"),
    ],
)
def test_validate_params_errors_name_the_field(name, params, field):
    with pytest.raises(IndicatorParamError) as info:
        validate_params(name, params)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value) or field == "indicator"
    with pytest.raises(IndicatorParamError):
        compute(name, params, high=np.ones(50), low=np.ones(50), close=np.ones(50))
