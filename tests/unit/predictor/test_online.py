"""Online updates: fine-tuned candidates are validated on recent rows and kept only if they hold."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from services.predictor.ml.lstm import LSTMMember
from services.predictor.ml.online import OnlineBuffer, acceptable, rows_at, update_model
from services.predictor.ml.training import EnsembleModel, SeriesData, train_ensemble
from services.predictor.ml.xgboost_model import XGBoostMember
from tests.unit.predictor.conftest import TINY, Trained

TRAIN = np.arange(500, 650)
VALIDATION = np.arange(650, 699)


@pytest.fixture(scope="module")
def xgb_model(aapl_series: SeriesData) -> EnsembleModel:
    """Return an XGBoost-only model trained on AAPL (fast)."""
    return train_ensemble(aapl_series, replace(TINY, models=("xgboost",)))


def test_the_buffer_keeps_the_newest_samples_and_says_when_an_update_is_due() -> None:
    buffer = OnlineBuffer()
    assert not buffer.add(("AAPL", day) for day in range(99))
    assert buffer.add([("AAPL", 99)])
    buffer.mark_updated()
    assert not buffer.due
    buffer.add(("AAPL", day) for day in range(100, 1100))
    assert len(buffer.samples) == 1000 and buffer.samples[0] == ("AAPL", 100)
    with pytest.raises(ValueError):
        OnlineBuffer(capacity=10, threshold=11)


def test_the_acceptance_rule_allows_five_percent_worse() -> None:
    assert acceptable(0.475, 0.5, "accuracy")
    assert not acceptable(0.474, 0.5, "accuracy")
    assert acceptable(0.63, 0.6, "brier")  # lower is better
    assert not acceptable(0.64, 0.6, "brier")
    assert not acceptable(0.5, 0.6, "accuracy", tolerance=0.0)


def test_rows_are_found_by_bar_time(aapl_series: SeriesData) -> None:
    dates = aapl_series.timestamps
    assert rows_at(aapl_series, [dates[650], dates[3], np.datetime64("1990-01-01")]).tolist() == [
        3,
        650,
    ]
    assert rows_at(aapl_series, []).size == 0


def test_an_update_is_validated_on_recent_rows_and_purged(
    xgb_model: EnsembleModel, aapl_series: SeriesData
) -> None:
    rows = {"AAPL": TRAIN}
    val = {"AAPL": VALIDATION}
    before = xgb_model.predict(aapl_series.features, VALIDATION).probabilities
    kept = update_model(xgb_model, aapl_series, rows, val, tolerance=1.0)
    assert kept.accepted and kept.model is not xgb_model
    assert "not more than 100% worse" in kept.reason
    new = kept.model.members["xgboost"]
    assert isinstance(new, XGBoostMember) and new.booster.num_boosted_rounds() == 40
    assert kept.model.info["updates"] == 1
    assert kept.model.info["online_training_rows"] == TRAIN.size - 1  # row 649's label hits 650
    assert kept.model.metrics["online"] == kept.candidate
    # the active model is untouched
    after = xgb_model.predict(aapl_series.features, VALIDATION).probabilities
    np.testing.assert_array_equal(after, before)
    # the verdict follows the figures, whichever way they go
    strict = update_model(xgb_model, aapl_series, rows, val, tolerance=0.0)
    new_acc = strict.candidate["ensemble"]["accuracy"]
    old_acc = strict.active["ensemble"]["accuracy"]
    assert strict.accepted == (new_acc >= old_acc)
    assert (strict.model is xgb_model) == (not strict.accepted)
    again = update_model(xgb_model, aapl_series, rows, val, tolerance=1.0)
    assert again.model.to_artifacts() == kept.model.to_artifacts()  # deterministic


def test_an_update_needs_rows_on_both_sides(
    xgb_model: EnsembleModel, aapl_series: SeriesData
) -> None:
    with pytest.raises(ValueError):
        update_model(xgb_model, aapl_series, {"AAPL": TRAIN}, {"AAPL": [699]})  # no label
    with pytest.raises(ValueError):
        update_model(xgb_model, aapl_series, {"AAPL": VALIDATION}, {"AAPL": VALIDATION[:5]})


def test_the_lstm_is_fine_tuned_from_its_weights(trained: Trained, aapl_series: SeriesData) -> None:
    model = trained.model
    before = model.predict(aapl_series.features, VALIDATION).probabilities
    result = update_model(
        model, aapl_series, {"AAPL": TRAIN}, {"AAPL": VALIDATION}, epochs=1, trees=5, tolerance=1.0
    )
    lstm, old = result.model.members["lstm"], model.members["lstm"]
    assert isinstance(lstm, LSTMMember) and isinstance(old, LSTMMember)
    assert lstm.epochs_run == old.epochs_run + 1
    assert result.model.info["lstm"]["epochs_run"] == lstm.epochs_run
    assert result.model.info["xgboost"]["trees"] == TINY.xgboost.n_estimators + 5
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(lstm.model.get_weights(), old.model.get_weights(), strict=True)
    ]
    assert any(changed)
    np.testing.assert_array_equal(
        model.predict(aapl_series.features, VALIDATION).probabilities, before
    )
    loaded = EnsembleModel.from_artifacts(result.model.to_artifacts(), trainable=True)
    np.testing.assert_array_equal(
        loaded.predict(aapl_series.features, VALIDATION).probabilities,
        result.model.predict(aapl_series.features, VALIDATION).probabilities,
    )
