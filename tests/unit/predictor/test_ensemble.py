"""The adaptive ensemble: equal weights first, then a softmax over the members' Sharpe ratios."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.predictor.ml.ensemble import AdaptiveEnsemble, softmax


def test_weights_start_equal_and_every_answer_carries_them() -> None:
    ens = AdaptiveEnsemble(("lstm", "xgboost"))
    assert ens.weights == {"lstm": 0.5, "xgboost": 0.5}
    a = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    b = np.array([[0.4, 0.4, 0.2], [0.2, 0.2, 0.6]])
    out = ens.combine({"lstm": a, "xgboost": b})
    np.testing.assert_allclose(out.probabilities, (a + b) / 2)
    assert out.weights == {"lstm": 0.5, "xgboost": 0.5}
    row = out.row(0)
    assert row["direction"] == "neutral" and row["confidence"] == pytest.approx(0.35)
    assert row["members"]["xgboost"] == {
        "probabilities": {"down": 0.4, "neutral": 0.4, "up": 0.2},
        "weight": 0.5,
    }
    assert out.calls.tolist() == [1, 0]


def test_weights_follow_a_softmax_over_recent_sharpe() -> None:
    ens = AdaptiveEnsemble(("lstm", "xgboost"))
    weights = ens.update_weights({"lstm": 1.0, "xgboost": 0.0})
    assert weights["lstm"] == pytest.approx(math.e / (1 + math.e))
    assert sum(weights.values()) == pytest.approx(1.0)
    a = np.array([[1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 1.0]])
    out = ens.combine({"lstm": a, "xgboost": b})
    np.testing.assert_allclose(out.probabilities, [[weights["lstm"], 0, weights["xgboost"]]])
    assert softmax([0.0, float("nan")]) == [0.5, 0.5]
    assert softmax([2.0, 0.0], temperature=2.0) == pytest.approx(softmax([1.0, 0.0]))


def test_the_member_that_traded_its_calls_better_gets_more_weight() -> None:
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.01, 200)
    up, down = np.array([0.0, 0.1, 0.9]), np.array([0.9, 0.1, 0.0])
    good = np.where(returns[:, None] > 0, up, down)  # calls the realised direction
    noisy = np.where(rng.random((200, 1)) > 0.5, up, down)
    ens = AdaptiveEnsemble(("lstm", "xgboost"))
    weights = ens.update_from_outcomes({"lstm": noisy, "xgboost": good}, returns)
    assert weights["xgboost"] > 0.99
    assert ens.sharpes["xgboost"] > 10 > abs(ens.sharpes["lstm"])


def test_the_state_round_trips_through_json() -> None:
    ens = AdaptiveEnsemble(("lstm", "xgboost"), temperature=0.5)
    ens.update_weights({"lstm": 0.3, "xgboost": -0.7})
    again = AdaptiveEnsemble.from_dict(json.loads(json.dumps(ens.to_dict())))
    assert again == ens


def test_bad_members_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveEnsemble(())
    with pytest.raises(ValueError):
        AdaptiveEnsemble(("a", "b"), weights={"a": 1.0})
    ens = AdaptiveEnsemble(("a", "b"))
    with pytest.raises(ValueError):
        ens.combine({"a": np.ones((1, 3))})
    with pytest.raises(ValueError):
        ens.combine({"a": np.ones((1, 3)), "b": np.ones((2, 3))})
