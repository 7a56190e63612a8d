"""Live outcomes and verdicts: logged predictions labelled by the bars that followed them."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from services.predictor.evaluation import (
    Logged,
    clean_json,
    live_figures,
    realise,
    verdict,
)
from services.predictor.ml import metrics as m
from services.predictor.ml.labels import forward_returns, make_labels
from services.predictor.ml.online import update_model
from services.predictor.ml.training import EnsembleModel, SeriesData, train_ensemble
from services.predictor.performance import distinct_predictions
from services.predictor.repository import PredictionRow
from services.predictor.tasks import member_sharpes
from shared.verdicts import judge_calls
from tests.unit.predictor.conftest import TINY

UP, DOWN = (0.1, 0.2, 0.7), (0.6, 0.3, 0.1)


def bars(aapl: pd.DataFrame, start: str, end: str) -> tuple[np.ndarray, np.ndarray]:
    part = aapl.loc[start:end]
    times = pd.DatetimeIndex(pd.to_datetime(part.index)).as_unit("ns").asi8
    return np.asarray(times, np.int64), part["close"].to_numpy(np.float64)


def test_realised_labels_are_the_training_labels_of_each_bar(aapl: pd.DataFrame) -> None:
    times, close = bars(aapl, "2020-01-02", "2020-06-30")
    labels = make_labels(close, 1, 0.5, 21)
    fwd = forward_returns(close, 1)
    rows = [30, 31, 40, 57, len(close) - 1]  # the last bar's outcome is not known yet
    logged = [Logged("AAPL", int(times[i]), UP, {"xgboost": DOWN}) for i in rows]
    logged.append(Logged("AAPL", int(times[30]) + 1, UP, {}))  # a time that is no bar
    logged.append(Logged("MSFT", int(times[30]), UP, {}))  # a symbol without bars
    out = realise(logged, {"AAPL": (times, close)}, horizon=1, band=0.5, vol_window=21)
    assert [it.time_ns for it in out.items] == [int(times[i]) for i in rows[:-1]]
    assert out.labels.tolist() == [int(labels[i]) for i in rows[:-1]]
    np.testing.assert_array_equal(out.returns, fwd[rows[:-1]])
    assert out.previous.tolist() == [int(labels[i - 1]) for i in rows[:-1]]
    assert out.pending == 3

    figures = live_figures(out, horizon=1, majority=1)
    y = out.labels
    assert figures.ensemble is not None
    assert figures.ensemble.accuracy == pytest.approx(float(np.mean(y == 2)))
    assert figures.members["xgboost"].accuracy == pytest.approx(float(np.mean(y == 0)))
    assert figures.baselines["majority"].accuracy == pytest.approx(float(np.mean(y == 1)))
    expected_sharpe = m.sharpe_of_calls(np.full(y.size, 2), out.returns, 1)
    assert figures.ensemble.sharpe == pytest.approx(expected_sharpe)
    # 4 realised calls, well under the minimum of 100: no verdict, whatever the accuracies
    assert figures.test.verdict == "insufficient_evidence" and figures.beats is False
    assert figures.test.n == 4 and "Insufficient evidence" in figures.verdict
    assert "fewer than the 100 a verdict needs" in figures.verdict


def test_no_realised_outcome_says_so() -> None:
    out = realise([Logged("AAPL", 5, UP, {})], {}, horizon=2, band=0.5, vol_window=21)
    figures = live_figures(out, horizon=2, majority=1)
    assert figures.ensemble is None and figures.beats is None
    assert "No realised out-of-sample predictions yet (1 pending)" in figures.verdict


def test_the_verdict_reads_the_test_segment_paired_test_only() -> None:
    def segment(n: int, b: int, c: int) -> dict[str, object]:
        fig = {"rows": n, "precision": 0, "recall": 0, "f1": 0, "ece": 0, "brier": 0}
        y = np.ones(n, dtype=np.int64)
        model = y.copy()
        model[:c] = 0  # wrong where only the baseline is right
        base = y.copy()
        base[c : c + b] = 0  # wrong where only the model is right
        test = judge_calls(model, y, {"majority": base, "previous": base})
        return {
            "rows": n,
            "ensemble": {**fig, "accuracy": float(np.mean(model == y)), "sharpe": 0},
            "baselines": {
                "majority": {**fig, "accuracy": float(np.mean(base == y)), "sharpe": 0},
                "previous": {**fig, "accuracy": float(np.mean(base == y)), "sharpe": 0},
            },
            "comparisons": {"ensemble": test.model_dump(mode="json")},
        }

    # validation (which picked the epochs) is never judged: a strong one does not count
    judged = verdict({"validation": segment(300, 60, 0), "test": segment(300, 1, 0)})
    assert judged.test.verdict == "does_not_beat" and not judged.beats
    assert "b=1" in judged.sentence and "c=0" in judged.sentence and "p=1" in judged.sentence
    judged = verdict({"validation": segment(300, 60, 0), "test": {"rows": 0}})
    assert judged.test.verdict == "insufficient_evidence" and not judged.beats
    judged = verdict({"test": segment(300, 40, 10)})
    assert judged.test.verdict == "beats" and judged.beats
    assert judged.test.baselines["majority"].p_value < 1e-4
    # the minimum is a setting: the same stored counts at a higher minimum are no verdict
    assert verdict({"test": segment(300, 40, 10)}, 500).test.verdict == "insufficient_evidence"
    # a version stored before the paired test is unproven, not "beats"
    old = segment(300, 40, 10)
    del old["comparisons"]
    judged = verdict({"test": old})
    assert judged.test.verdict == "insufficient_evidence" and "before the paired" in judged.sentence
    assert verdict({}).beats is False


def test_one_prediction_per_symbol_and_bar_the_latest_logged() -> None:
    bar = datetime(2020, 3, 2, tzinfo=UTC)

    def row(symbol: str, p: tuple[float, float, float], minute: int) -> PredictionRow:
        probs = dict(zip(("down", "neutral", "up"), p, strict=True))
        return PredictionRow(
            symbol=symbol,
            timestamp=bar.replace(tzinfo=None),  # SQLite gives naive UTC
            model_version="1.0.0",
            predicted_value=None,
            confidence=None,
            details={"probabilities": probs, "members": {}},
            created_at=datetime(2020, 3, 3, 0, minute, tzinfo=UTC),
        )

    newest_first = [row("AAPL", UP, 2), row("AAPL", DOWN, 1), row("MSFT", DOWN, 0)]
    out = distinct_predictions(newest_first)
    assert [(it.symbol, it.probabilities) for it in out] == [("AAPL", UP), ("MSFT", DOWN)]
    assert out[0].time_ns == pd.Timestamp(bar).value


def test_clean_json_turns_non_finite_numbers_into_null() -> None:
    value = {"a": [1.0, math.nan, np.float64(2.5)], "b": {"c": math.inf}, "d": np.int64(3)}
    assert clean_json(value) == {"a": [1.0, None, 2.5], "b": {"c": None}, "d": 3}


def test_an_update_reweights_the_candidate_from_the_members_sharpes(
    aapl_series: SeriesData,
) -> None:
    model: EnsembleModel = train_ensemble(aapl_series, replace(TINY, models=("xgboost",)))
    rows = {"AAPL": np.arange(500, 650)}
    sharpes = member_sharpes(model, [aapl_series], rows)
    calls = m.calls(model.member_probabilities(aapl_series.features, rows["AAPL"])["xgboost"])
    returns = forward_returns(aapl_series.close, 1)[rows["AAPL"]]
    assert sharpes == {"xgboost": pytest.approx(m.sharpe_of_calls(calls, returns, 1))}
    result = update_model(
        model,
        aapl_series,
        rows,
        {"AAPL": np.arange(650, 699)},
        trees=3,
        tolerance=1.0,
        sharpes=sharpes,
    )
    assert result.model.ensemble.sharpes == sharpes
    assert result.model.ensemble.weights == {"xgboost": 1.0}
    assert model.ensemble.sharpes == {}  # the active model is untouched


def test_in_sample_calls_are_reported_apart_and_never_judged() -> None:
    # a version that saw days 0..299 calls them perfectly (it learnt them); its calls on
    # days 300..699 are coin flips on a random walk: that is what must be judged
    from services.predictor.evaluation import Realised, TrainingRange, training_range

    day = 86_400 * 10**9
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 700)
    guess = rng.integers(0, 3, 700)
    called = np.where(np.arange(700) < 300, y, guess)
    probs = [tuple(np.eye(3)[k] * 0.8 + 0.2 / 3) for k in called]
    items = [Logged("X", i * day, probs[i], {}) for i in range(700)]
    realised = Realised(items, y, rng.normal(0, 0.01, 700), np.roll(y, 1), 0)
    trained = TrainingRange(0, 299 * day, ("X",))
    figures = live_figures(realised, horizon=1, majority=1, trained=trained)
    assert figures.in_sample is not None and figures.in_sample.rows == 300
    assert figures.in_sample.ensemble is not None and figures.in_sample.ensemble.accuracy == 1.0
    assert figures.out_of_sample == 400 and figures.ensemble is not None
    assert figures.ensemble.rows == 400 and figures.test.n == 400
    assert figures.test.verdict == "does_not_beat" and figures.beats is False
    assert "In sample" in figures.verdict and "300 other realised" in figures.verdict
    # today's rule (no split) would have judged all 700 calls, the perfect 300 among them
    everything = live_figures(realised, horizon=1, majority=1)
    assert everything.test.verdict == "beats"
    # the range comes from the version's stored segments (train first .. validation last)
    stored = {
        "info": {
            "segments": {
                "X": {
                    "train": {"first": "2018-01-02T00:00:00", "last": "2021-06-30T00:00:00"},
                    "validation": {"first": "2021-07-06", "last": "2022-03-31T00:00:00"},
                    "test": {"first": "2022-04-06", "last": "2022-12-30"},
                }
            }
        }
    }
    rng_ = training_range(stored, ["X"], None, None)
    stamp = pd.Timestamp("2022-03-31", tz="UTC").value
    assert rng_.contains(stamp) and not rng_.contains(stamp + day * 6)  # test: out of sample
    online = training_range({**stored, "kind": "online_update"}, ["X"], None, stamp + 100 * day)
    assert online.contains(stamp + 100 * day)  # an update learnt from its outcomes too
