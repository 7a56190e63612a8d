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


class _Constant:
    """A member that calls `neutral` on every bar (the degenerate LSTM seen on NVDA)."""

    name = "lstm"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.2, 0.6, 0.2], (len(x), 1))


class _Varied:
    name = "xgboost"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(0)
        p = rng.dirichlet(np.ones(3), size=len(x))
        return np.asarray(p)


def test_a_member_calling_one_class_everywhere_is_degenerate_and_weighs_nothing() -> None:
    from services.predictor.ml.training import degenerate_members

    x = np.zeros((200, 4))
    probs = {"lstm": _Constant().predict_proba(x), "xgboost": _Varied().predict_proba(x)}
    assert degenerate_members(probs) == {"lstm": "neutral"}
    ens = AdaptiveEnsemble(("lstm", "xgboost"))
    assert ens.mark_degenerate({"lstm": "neutral"}) == {"lstm": 0.0, "xgboost": 1.0}
    assert ens.reasons["lstm"].startswith("degenerate: calls neutral")
    out = ens.combine(probs)
    np.testing.assert_allclose(out.probabilities, probs["xgboost"])
    # a Sharpe-based reweighting never revives it, and the state round-trips
    assert ens.update_weights({"lstm": 5.0, "xgboost": -1.0}) == {"lstm": 0.0, "xgboost": 1.0}
    again = AdaptiveEnsemble.from_dict(json.loads(json.dumps(ens.to_dict())))
    assert again.degenerate() == ["lstm"] and again.weights == ens.weights
    # when every member is degenerate the weights stay equal and both are named
    both = AdaptiveEnsemble(("lstm", "xgboost"))
    assert both.mark_degenerate({"lstm": "neutral", "xgboost": "up"}) == {
        "lstm": 0.5,
        "xgboost": 0.5,
    }
    assert both.degenerate() == ["lstm", "xgboost"]


def test_the_sharpe_of_the_calls_carries_its_sample_and_a_p_value() -> None:
    from services.predictor.ml import metrics as m

    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, 500)
    calls = np.where(rng.random(500) < 0.2, 1, 2)  # up on 80% of bars, neutral on the rest
    n, p = m.sharpe_test(calls, returns)  # a random walk: no edge
    assert n == int(np.sum(calls != 1)) and p is not None and p > 0.01
    edge = np.where(returns > 0, 2, 0)  # a planted edge: knows the sign
    n, p = m.sharpe_test(edge, returns)
    assert n == 500 and p is not None and p < 1e-10
    # the climatology forecast: the training class frequencies on every row
    freq = m.class_frequencies(np.array([0, 1, 1, 2, np.nan]))
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25])
    y = np.array([1, 1, 0, 2])
    assert m.brier_score(y, m.climatology(freq, 4)) < m.brier_score(y, m.one_hot(np.ones(4)))
