"""Metrics of the calls agree with scikit-learn where it has them, and with hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, precision_recall_fscore_support

from services.predictor.ml import metrics as m


@pytest.fixture
def calls3() -> tuple[np.ndarray, np.ndarray]:
    """Return 500 random true classes and probabilities that lean towards them."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 500)
    logits = rng.normal(0, 1, (500, 3))
    logits[np.arange(500), y] += 0.7
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_classification_metrics_equal_scikit_learn(calls3: tuple[np.ndarray, np.ndarray]) -> None:
    y, proba = calls3
    pred = m.calls(proba)
    assert m.accuracy(y, pred) == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    p, r, f1, _ = precision_recall_fscore_support(
        y, pred, labels=[0, 1, 2], average="macro", zero_division=0
    )
    assert m.precision_recall_f1(y, pred) == pytest.approx((p, r, f1), abs=1e-12)
    # a class never called counts 0, like zero_division=0
    never = np.where(pred == 2, 1, pred)
    p, r, f1, _ = precision_recall_fscore_support(
        y, never, labels=[0, 1, 2], average="macro", zero_division=0
    )
    assert m.precision_recall_f1(y, never) == pytest.approx((p, r, f1), abs=1e-12)


def test_the_brier_score_equals_scikit_learns_multiclass_one(
    calls3: tuple[np.ndarray, np.ndarray],
) -> None:
    y, proba = calls3
    expected = brier_score_loss(y, proba, labels=[0, 1, 2])
    assert m.brier_score(y, proba) == pytest.approx(expected, abs=1e-12)
    assert m.brier_score(y, m.one_hot(y)) == 0.0
    assert m.brier_score(y, m.one_hot((y + 1) % 3)) == 2.0


def test_expected_calibration_error_by_hand() -> None:
    y = np.array([0, 0, 1, 2])
    proba = np.array(
        [
            [0.95, 0.05, 0.0],  # bin 10, right
            [0.45, 0.35, 0.2],  # bin 5, right
            [0.5, 0.3, 0.2],  # bin 5, wrong (calls 0)
            [0.2, 0.1, 0.7],  # bin 7, right
        ]
    )
    expected = 0.25 * abs(1 - 0.95) + 0.5 * abs(0.5 - 0.475) + 0.25 * abs(1 - 0.7)
    assert m.expected_calibration_error(y, proba) == pytest.approx(expected, abs=1e-15)
    assert m.expected_calibration_error(y, m.one_hot(y)) == 0.0


def test_the_sharpe_of_trading_the_calls() -> None:
    calls = np.array([2, 0, 1, 2, 0])
    returns = np.array([0.01, -0.02, 0.05, -0.01, 0.01])
    pnl = m.call_returns(calls, returns)
    np.testing.assert_allclose(pnl, [0.01, 0.02, 0.0, -0.01, -0.01])
    expected = pnl.mean() / pnl.std(ddof=1) * math.sqrt(252)
    assert m.sharpe_of_calls(calls, returns) == pytest.approx(expected, rel=1e-12)
    assert m.sharpe_of_calls(calls, returns, horizon=5) == pytest.approx(
        expected / math.sqrt(5), rel=1e-12
    )
    assert m.sharpe_of_calls(np.ones(5, dtype=int), returns) == 0.0  # always flat


def test_baselines_and_the_verdict() -> None:
    labels = np.array([np.nan, 2, 2, 0, 1, 2, 0, 0, 2, np.nan])
    returns = np.linspace(-0.01, 0.01, 10)
    train = np.array([1, 2, 3, 4, 5])
    assert m.majority_class(labels[train]) == 2
    assert m.previous_label_calls(labels, np.array([0, 1, 4, 8]), 1).tolist() == [1, 1, 0, 0]
    assert m.previous_label_calls(labels, np.array([4]), 3).tolist() == [2]
    base = m.baseline_metrics(labels, returns, np.array([6, 7, 8]), train, 1)
    assert base["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert base["previous"]["accuracy"] == pytest.approx(1 / 3)  # calls 2, 0, 0 for 0, 0, 2


def test_evaluate_reports_every_figure(calls3: tuple[np.ndarray, np.ndarray]) -> None:
    y, proba = calls3
    out = m.evaluate(y, proba, np.zeros(y.size))
    assert set(out) == {
        "rows",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "ece",
        "brier",
        "log_loss",
        "sharpe",
        "sharpe_calls",
        "sharpe_p_value",
    }
    assert out["rows"] == 500 and out["sharpe"] == 0.0
    assert out["sharpe_calls"] == int(np.sum(proba.argmax(axis=1) != 1))
    assert out["sharpe_p_value"] is None  # zero returns: no variance, no test
    expected = -np.mean(np.log(proba[np.arange(y.size), y]))
    assert out["log_loss"] == pytest.approx(expected)
    with pytest.raises(ValueError):
        m.evaluate(y, proba[:, :2], np.zeros(y.size))
    with pytest.raises(ValueError):
        m.accuracy(np.array([0, 3]), np.array([0, 1]))
