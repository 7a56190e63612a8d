"""Member weights from realised out-of-sample outcomes: a planted edge gains weight."""

from __future__ import annotations

import numpy as np

from services.predictor.adapt import reweight
from services.predictor.evaluation import Logged, Realised, TrainingRange
from services.predictor.ml.ensemble import AdaptiveEnsemble

DAY = 86_400 * 10**9
UP, DOWN, FLAT = (0.1, 0.2, 0.7), (0.7, 0.2, 0.1), (0.2, 0.6, 0.2)


def outcomes(n: int, seed: int = 0, start: int = 1000) -> Realised:
    """Return n realised outcomes of a random walk; `edge` knows the sign, `noise` guesses."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, n)
    items = []
    for i in range(n):
        edge = UP if r[i] > 0 else DOWN
        noise = UP if rng.random() < 0.5 else DOWN
        items.append(Logged("X", (start + i) * DAY, edge, {"lstm": edge, "xgboost": noise}))
    labels = np.where(r > 0, 2, 0)
    return Realised(items, labels, r, np.ones(n, dtype=np.int64), 0)


STATE = AdaptiveEnsemble(("lstm", "xgboost")).to_dict()
NEVER = TrainingRange(0, 999 * DAY, ("X",))  # trained on bars before day 1000


def test_the_member_with_an_edge_gains_the_weight() -> None:
    out = reweight(
        STATE, outcomes(120), NEVER, horizon=1, min_outcomes=30, window=250, after_ns=None
    )
    assert out.changed and out.entry is not None and out.state is not None
    w = out.entry["weights"]
    assert w["lstm"] > 0.99 and w["lstm"] + w["xgboost"] == 1.0
    assert out.entry["sharpes"]["lstm"] > out.entry["sharpes"]["xgboost"]
    assert out.entry["outcomes"] == 120 and out.entry["before"] == {"lstm": 0.5, "xgboost": 0.5}
    assert out.state["weights"] == w and "120 realised out-of-sample" in out.reason


def test_weights_need_a_minimum_of_new_out_of_sample_outcomes() -> None:
    few = reweight(
        STATE, outcomes(29), NEVER, horizon=1, min_outcomes=30, window=250, after_ns=None
    )
    assert not few.changed and "move from 30 on" in few.reason
    # in-sample outcomes (inside the training range) never move the weights
    inside = TrainingRange(0, 5000 * DAY, ("X",))
    out = reweight(
        STATE, outcomes(200), inside, horizon=1, min_outcomes=30, window=250, after_ns=None
    )
    assert not out.changed and out.outcomes == 0
    # nothing newer than the last reweighting: no change
    last = (1000 + 199) * DAY
    out = reweight(
        STATE, outcomes(200), NEVER, horizon=1, min_outcomes=30, window=250, after_ns=last
    )
    assert not out.changed and "No outcome newer" in out.reason


def test_a_degenerate_member_keeps_weight_zero() -> None:
    ens = AdaptiveEnsemble(("lstm", "xgboost"))
    ens.mark_degenerate({"xgboost": "neutral"})
    out = reweight(
        ens.to_dict(), outcomes(100), NEVER, horizon=1, min_outcomes=30, window=50, after_ns=None
    )
    assert out.changed and out.entry is not None
    assert out.entry["weights"] == {"lstm": 1.0, "xgboost": 0.0}
    assert out.entry["outcomes"] == 50  # the rolling window: the newest 50
