"""shared.quant.features: 50 documented features from past bars only, windowed = full history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.quant.features import (
    FEATURE_NAMES,
    FEATURES,
    LOOKBACK,
    WARMUP,
    FeatureInputError,
    compute_features,
    feature_names,
)

Bars = dict[str, np.ndarray]


def bars_of(frame: pd.DataFrame) -> Bars:
    """Return the OHLCV arrays and dates of a CSV frame indexed by date."""
    return {
        "open": frame["open"].to_numpy(np.float64),
        "high": frame["high"].to_numpy(np.float64),
        "low": frame["low"].to_numpy(np.float64),
        "close": frame["close"].to_numpy(np.float64),
        "volume": frame["volume"].to_numpy(np.float64),
        "timestamps": pd.to_datetime(frame.index).to_numpy(),
    }


def features_of(bars: Bars, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Return the feature matrix of bars[start:stop]."""
    part = {k: v[start:stop] for k, v in bars.items()}
    names, matrix = compute_features(**part)
    assert names == list(FEATURE_NAMES)
    return matrix


def col(matrix: np.ndarray, name: str) -> np.ndarray:
    """Return one feature column."""
    return matrix[:, FEATURE_NAMES.index(name)]


@pytest.fixture(scope="module")
def bars(aapl: pd.DataFrame) -> Bars:
    """Return AAPL's daily bars (about 5,000)."""
    return bars_of(aapl)


@pytest.fixture(scope="module")
def full(bars: Bars) -> np.ndarray:
    """Return AAPL's features on its full history."""
    return features_of(bars)


def test_the_registry_documents_fifty_features() -> None:
    assert len(FEATURES) == 50
    assert feature_names() == list(FEATURE_NAMES) == list(FEATURES)
    for spec in FEATURES.values():
        assert spec.description.endswith("."), spec.name
        assert 0 <= spec.lookback <= spec.warmup, spec.name
    assert max(s.lookback for s in FEATURES.values()) == LOOKBACK == 63
    assert max(s.warmup for s in FEATURES.values()) == WARMUP
    recursive = {n for n, s in FEATURES.items() if s.warmup > s.lookback}
    assert recursive == {
        "rsi_7",
        "rsi_14",
        "rsi_21",
        "macd",
        "macd_signal",
        "macd_histogram",
        "atr_14",
        "dist_ema_12",
        "dist_ema_26",
    }


def test_warm_up_rows_are_nan_and_every_later_value_finite(csv_dir: Path) -> None:
    for path in sorted(csv_dir.glob("*.csv")):
        frame = pd.read_csv(path, dtype={"date": str}).set_index("date")
        matrix = features_of(bars_of(frame))
        for j, name in enumerate(FEATURE_NAMES):
            lb = FEATURES[name].lookback
            assert np.isnan(matrix[:lb, j]).all(), (path.name, name)
            assert np.isfinite(matrix[lb:, j]).all(), (path.name, name)


def test_features_agree_with_pandas_and_talib(bars: Bars, full: np.ndarray) -> None:
    o, h, lo, c, v = (bars[k] for k in ("open", "high", "low", "close", "volume"))
    s = pd.Series(c)
    lr = np.log(s).diff()
    lv = pd.Series(np.log1p(v))
    dates = pd.DatetimeIndex(bars["timestamps"])
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    slowk, slowd = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    expected = {
        "ret_1": s.pct_change(1),
        "ret_21": s.pct_change(21),
        "log_ret_63": np.log(s).diff(63),
        "gap": np.log(o) - np.log(s.shift(1)),
        "bar_range": np.log(h / lo),
        "close_location": (c - lo) / (h - lo),
        "volatility_21": lr.rolling(21).std(),
        "volatility_63": lr.rolling(63).std(),
        "parkinson_21": np.sqrt(
            pd.Series(np.log(h / lo) ** 2).rolling(21).mean() / (4 * np.log(2))
        ),
        "volatility_ratio": lr.rolling(5).std() / lr.rolling(21).std(),
        "log_volume": lv,
        "rel_volume_21": lv - lv.rolling(21).mean(),
        "volume_zscore_21": (lv - lv.rolling(21).mean()) / lv.rolling(21).std(),
        "volume_flow_21": (np.sign(s.diff()) * v).rolling(21).sum()
        / pd.Series(v).rolling(21).sum(),
        "rsi_14": talib.RSI(c, 14) / 100,
        "rsi_21": talib.RSI(c, 21) / 100,
        "macd": macd / c,
        "macd_signal": signal / c,
        "macd_histogram": hist / c,
        "bb_percent_b": (c - lower) / (upper - lower),
        "bb_width": (upper - lower) / middle,
        "williams_r_28": talib.WILLR(h, lo, c, 28) / 100,
        "stoch_k": slowk / 100,
        "stoch_d": slowd / 100,
        "atr_14": talib.ATR(h, lo, c, 14) / c,
        "dist_sma_50": c / talib.SMA(c, 50) - 1,
        "dist_ema_26": c / talib.EMA(c, 26) - 1,
        "sma_5_21": talib.SMA(c, 5) / talib.SMA(c, 21) - 1,
        "dist_high_21": c / pd.Series(h).rolling(21).max() - 1,
        "dist_low_21": c / pd.Series(lo).rolling(21).min() - 1,
        "day_of_week_cos": np.cos(2 * np.pi * dates.day_of_week / 7),
        "month_sin": np.sin(2 * np.pi * (dates.month - 1) / 12),
    }
    for name, ref in expected.items():
        ref_arr = np.asarray(ref, dtype=np.float64)
        lb = FEATURES[name].lookback
        np.testing.assert_allclose(col(full, name)[lb:], ref_arr[lb:], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("start", [WARMUP, 1500, 3000, 4900])
def test_a_window_with_its_warm_up_equals_full_history(
    bars: Bars, full: np.ndarray, start: int
) -> None:
    windowed = features_of(bars, start - WARMUP)[WARMUP:]
    reference = full[start:]
    # equal up to rounding (running sums in the kernels); recursions within their 1e-12 tail
    for j, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(
            windowed[:, j], reference[:, j], rtol=0, atol=1e-11, err_msg=name
        )


def test_each_feature_needs_only_its_own_warm_up(bars: Bars, full: np.ndarray) -> None:
    start = 3000
    for j, name in enumerate(FEATURE_NAMES):
        wu = FEATURES[name].warmup
        windowed = features_of(bars, start - wu)[wu:, j]
        np.testing.assert_allclose(windowed, full[start:, j], rtol=0, atol=1e-11, err_msg=name)


def test_recursive_features_do_need_the_longer_warm_up(bars: Bars, full: np.ndarray) -> None:
    start = 3000
    short = features_of(bars, start - LOOKBACK)[LOOKBACK:]
    gap = np.abs(col(short, "rsi_21") - col(full[start:], "rsi_21")).max()
    assert gap > 1e-6  # only the lookback: the seed still shows


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(min_value=0, max_value=298),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    scale=st.floats(min_value=1e-3, max_value=0.5),
)
def test_a_feature_at_t_never_changes_when_later_bars_change(
    bars: Bars, t: int, seed: int, scale: float
) -> None:
    n = 300
    base = {k: v[2000 : 2000 + n].copy() for k, v in bars.items()}
    changed = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(seed)
    m = n - t - 1
    close = base["close"][t] * np.exp(np.cumsum(rng.normal(0, scale, m)))
    open_ = close * np.exp(rng.normal(0, scale, m))
    changed["close"][t + 1 :] = close
    changed["open"][t + 1 :] = open_
    changed["high"][t + 1 :] = np.maximum(open_, close) * (1 + rng.uniform(0, scale, m))
    changed["low"][t + 1 :] = np.minimum(open_, close) * (1 - rng.uniform(0, 0.5, m) * scale)
    changed["volume"][t + 1 :] = rng.integers(0, 10**9, m).astype(np.float64)
    gaps = rng.integers(1, 5, m).astype("timedelta64[D]")
    changed["timestamps"][t + 1 :] = base["timestamps"][t] + np.cumsum(gaps)
    before = features_of(base)[: t + 1]
    after = features_of(changed)[: t + 1]
    np.testing.assert_array_equal(after, before)


def test_flat_markets_give_finite_neutral_values() -> None:
    n = 300
    flat = {
        "open": np.full(n, 10.0),
        "high": np.full(n, 10.0),
        "low": np.full(n, 10.0),
        "close": np.full(n, 10.0),
        "volume": np.full(n, 1000.0),
        "timestamps": pd.bdate_range("2020-01-01", periods=n).to_numpy(),
    }
    matrix = features_of(flat)
    assert np.isfinite(matrix[LOOKBACK:]).all()
    assert (col(matrix, "close_location") == 0.5).all()
    assert (col(matrix, "bb_percent_b")[19:] == 0.5).all()
    assert (col(matrix, "volume_zscore_21")[20:] == 0.0).all()
    assert (col(matrix, "volatility_21")[21:] == 0.0).all()
    assert (col(matrix, "volatility_ratio")[21:] == 1.0).all()


def test_short_and_empty_inputs_are_all_warm_up(bars: Bars) -> None:
    matrix = features_of(bars, 0, 30)
    assert matrix.shape == (30, 50)
    assert np.isnan(col(matrix, "log_ret_63")).all()
    assert np.isfinite(col(matrix, "bar_range")).all()
    assert features_of(bars, 0, 0).shape == (0, 50)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("close", lambda b: b["close"].__setitem__(5, np.nan)),
        ("open", lambda b: b["open"].__setitem__(5, 0.0)),
        ("volume", lambda b: b["volume"].__setitem__(5, -1.0)),
        ("high", lambda b: b["high"].__setitem__(5, b["low"][5] * 0.5)),
        ("low", lambda b: b.__setitem__("low", b["low"][:-1])),
        ("timestamps", lambda b: b["timestamps"].__setitem__(5, b["timestamps"][4])),
        ("timestamps", lambda b: b.__setitem__("timestamps", ["not a date"] * 100)),
        ("close", lambda b: b.__setitem__("close", np.ones((100, 2)))),
    ],
)
def test_bad_bars_name_the_field(bars: Bars, field: str, change: object) -> None:
    part = {k: v[:100].copy() for k, v in bars.items()}
    change(part)  # type: ignore[operator]
    with pytest.raises(FeatureInputError) as err:
        compute_features(**part)
    assert err.value.field == field
