"""Labels read nothing past t + horizon; the purged split keeps every label inside its segment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.predictor.ml.dataset import (
    Standardizer,
    assign_segments,
    purged_split,
    sequence_windows,
    split_boundaries,
    usable_rows,
)
from services.predictor.ml.labels import forward_returns, make_labels, trailing_volatility
from services.predictor.ml.types import DOWN, NEUTRAL, UP


def test_labels_compare_the_forward_return_with_a_volatility_band() -> None:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    for horizon, band in ((1, 0.5), (5, 0.3)):
        labels = make_labels(close, horizon=horizon, band=band, vol_window=21)
        fwd = np.log(pd.Series(close).shift(-horizon) / close).to_numpy()
        vol = np.log(pd.Series(close)).diff().rolling(21).std().to_numpy()
        threshold = band * vol * np.sqrt(horizon)
        expected = np.where(fwd > threshold, UP, np.where(fwd < -threshold, DOWN, NEUTRAL))
        defined = np.isfinite(fwd) & np.isfinite(vol)
        assert np.isnan(labels[~defined]).all()
        assert (labels[defined] == expected[defined]).all()
        assert np.isnan(labels[-horizon:]).all() and np.isnan(labels[:21]).all()
        assert set(np.unique(labels[defined])) == {DOWN, NEUTRAL, UP}


def test_the_band_sets_the_share_of_neutral_labels() -> None:
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 2000)))
    shares = []
    for band in (0.0, 0.5, 1.0, 100.0):
        labels = make_labels(close, band=band)
        shares.append(float(np.mean(labels[np.isfinite(labels)] == NEUTRAL)))
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert shares[0] < shares[1] < shares[2] < shares[3]


def test_forward_returns_and_volatility_match_pandas() -> None:
    close = np.array([10.0, 11.0, 9.9, 10.4, 10.4, 12.0, 11.0])
    np.testing.assert_allclose(
        forward_returns(close, 2), pd.Series(close).pct_change(2).shift(-2).to_numpy()
    )
    np.testing.assert_allclose(
        trailing_volatility(close, 3), np.log(pd.Series(close)).diff().rolling(3).std().to_numpy()
    )


@pytest.mark.parametrize(
    "kwargs", [{"horizon": 0}, {"horizon": 1.5}, {"band": -1.0}, {"vol_window": 1}]
)
def test_bad_label_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make_labels(np.linspace(10, 20, 50), **kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(0, 198),
    horizon=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_label_at_t_never_changes_when_bars_after_t_plus_horizon_change(
    t: int, horizon: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    changed = close.copy()
    cut = t + horizon + 1
    changed[cut:] = close[min(cut, 199)] * np.exp(rng.normal(0, 0.3, max(0, 200 - cut)))
    before = make_labels(close, horizon=horizon, band=0.4, vol_window=10)[: t + 1]
    after = make_labels(changed, horizon=horizon, band=0.4, vol_window=10)[: t + 1]
    np.testing.assert_array_equal(after, before)
    # ...and the bar t + horizon does matter: the property is not vacuous
    if cut - 1 < 200 and t >= 10:
        moved = close.copy()
        moved[cut - 1 :] *= 1.5
        assert make_labels(moved, horizon=horizon, band=0.4, vol_window=10)[t] == UP


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 400),
    start=st.integers(0, 100),
    horizon=st.integers(1, 20),
    val=st.floats(0.0, 0.45),
    test=st.floats(0.0, 0.45),
)
def test_the_purged_split_keeps_every_label_inside_its_segment(
    n: int, start: int, horizon: int, val: float, test: float
) -> None:
    rows = np.arange(start, start + n, dtype=np.int64)
    split = purged_split(rows, horizon, val, test)
    train, validation, tst = split.train, split.validation, split.test
    parts = [train, validation, tst]
    joined = np.concatenate(parts)
    assert np.isin(joined, rows).all() and np.unique(joined).size == joined.size
    assert all((np.diff(p) > 0).all() for p in parts)
    later = [(train, validation), (train, tst), (validation, tst)]
    for early, late in later:
        if early.size and late.size:
            assert early.max() + horizon < late.min()  # no label reaches a later segment
    # only rows within `horizon` bars of a later segment's start are dropped
    firsts = [b for b in split_boundaries(rows, val, test) if b is not None]
    dropped = np.setdiff1d(rows, joined)
    for r in dropped:
        assert any(r < f <= r + horizon for f in firsts)
    assert tst.size == int(np.floor(n * test))


def test_several_symbols_split_on_common_dates() -> None:
    days = np.arange(100, dtype=np.int64)
    times = np.concatenate([days, days[20:]])  # a second symbol that starts later
    ends = times + 1
    bounds = split_boundaries(times, 0.2, 0.2)
    train, val, test = assign_segments(times, ends, bounds)
    for mask in (train, val, test):
        assert mask.any()
    # a date is in one segment whichever symbol it belongs to
    for day in days:
        segs = {int(np.argmax([train[i], val[i], test[i]])) for i in np.flatnonzero(times == day)}
        dropped = not (train | val | test)[times == day].any()
        assert len(segs) == 1 or dropped
    assert times[train].max() + 1 < times[val].min() and times[val].max() + 1 < times[test].min()


def test_usable_rows_need_a_complete_window_and_a_label() -> None:
    x = np.ones((12, 2))
    x[3, 1] = np.nan
    labels = np.ones(12)
    labels[-1] = np.nan
    assert usable_rows(x, labels, context=1).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert usable_rows(x, labels, context=3).tolist() == [2, 6, 7, 8, 9, 10]
    assert usable_rows(x, None, context=12).tolist() == []


def test_the_scaler_is_fitted_on_the_rows_it_is_given_and_round_trips_exactly() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, (300, 4))
    x[:, 3] = 7.0  # constant: scale 1, not a division by zero
    train = x[:200]
    scaler = Standardizer.fit(train)
    z = scaler.transform(train)
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0, atol=1e-12)
    assert (z[:, 3] == 0.0).all()
    again = Standardizer.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(again.transform(x), scaler.transform(x))
    assert np.abs(scaler.transform(x * 1e6)).max() == scaler.clip


def test_sequence_windows_stack_the_rows_ending_at_each_sample() -> None:
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    windows = sequence_windows(x, np.array([4, 10, 19]), 5)
    assert windows.shape == (3, 5, 2) and windows.dtype == np.float32
    for i, r in enumerate((4, 10, 19)):
        np.testing.assert_array_equal(windows[i], x[r - 4 : r + 1])
    with pytest.raises(ValueError):
        sequence_windows(x, np.array([3]), 5)
