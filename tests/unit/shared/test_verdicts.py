"""The paired verdict against the baselines, on calls whose truth is known.

A model that differs from its baseline on a bar or two is not `beats`; a planted pattern is;
on random outcomes a model with no edge is called `beats` at most at the test's level.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from shared.verdicts import decide, describe, judge, judge_calls, mcnemar


def differing_on(n: int, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Return correctness of a model and a baseline equal but on b + c bars."""
    model = np.zeros(n, dtype=bool)
    base = np.zeros(n, dtype=bool)
    model[: n // 2] = base[: n // 2] = True  # both right on half the bars
    model[n // 2 : n // 2 + b] = True  # only the model right
    base[n // 2 + b : n // 2 + b + c] = True  # only the baseline right
    return model, base


def test_mcnemar_counts_the_discordant_bars_and_is_the_binomial_test() -> None:
    model, base = differing_on(200, 12, 3)
    c = mcnemar(model, base)
    assert (c.n, c.model_only, c.baseline_only) == (200, 12, 3)
    assert (c.model_correct, c.baseline_correct) == (112, 103)
    assert c.p_value == pytest.approx(binomtest(12, 15, 0.5).pvalue)
    assert mcnemar(model, model).p_value == 1.0  # never disagree
    with pytest.raises(ValueError):
        mcnemar(model, base[:-1])


def test_one_bar_of_difference_is_not_beating() -> None:
    # MS: the model differed from the majority class on 1 bar of 298 (the old rule: "beats")
    model, base = differing_on(298, 1, 0)
    assert model.mean() > base.mean()
    v = judge(model, {"majority": base, "previous": base})
    assert v.verdict == "does_not_beat"
    assert v.baselines["majority"].p_value == 1.0
    # ORCL: 5 bars against 1 on 60 realised calls: below the minimum, no verdict at all
    model, base = differing_on(60, 5, 1)
    v = judge(model, {"majority": base, "previous": base})
    assert v.verdict == "insufficient_evidence" and v.n == 60 and v.min_calls == 100
    assert "60 realised call(s), fewer than the 100" in describe(v)


def test_every_baseline_must_be_beaten() -> None:
    model, strong = differing_on(400, 60, 10)
    assert judge(model, {"majority": strong}).verdict == "beats"
    close = model.copy()
    close[:11] = False  # the second baseline misses 11 bars the model got right
    close[300:310] = True  # and gets 10 right that the model missed
    v = judge(model, {"majority": strong, "previous": close})
    assert v.baselines["majority"].p_value < 1e-6 and v.baselines["previous"].p_value > 0.05
    assert v.verdict == "does_not_beat"
    # more bars only the baseline got right is never "beats", however small p is
    assert judge(strong, {"majority": model}).verdict == "does_not_beat"


def test_the_counts_decide_again_at_another_minimum() -> None:
    model, base = differing_on(150, 30, 5)
    v = judge(model, {"majority": base})
    assert v.verdict == "beats"
    assert decide(v.n, v.baselines, min_calls=200).verdict == "insufficient_evidence"
    text = describe(v, subject="the ensemble")
    assert "b=30" in text and "c=5" in text and "McNemar" in text and "150 realised" in text


def planted(rng: np.random.Generator, n: int, noise: float) -> np.ndarray:
    """Return outcomes that alternate up / down, a share `noise` replaced at random."""
    y = np.where(np.arange(n) % 2 == 0, 2, 0)
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, 3, int(flip.sum()))
    return y


def previous_of(y: np.ndarray) -> np.ndarray:
    return np.concatenate([[1], y[:-1]])


def test_a_planted_pattern_beats_and_a_random_walk_does_not() -> None:
    rng = np.random.default_rng(7)
    y = planted(rng, 300, 0.5)
    model = np.where(np.arange(300) % 2 == 0, 2, 0)  # knows the pattern
    v = judge_calls(model, y, {"majority": np.full(300, 2), "previous": previous_of(y)})
    assert v.verdict == "beats"
    # the same model on random outcomes (a random walk's directions): no edge
    said_beats = 0
    for seed in range(200):
        r = np.random.default_rng(1000 + seed)
        y = r.integers(0, 3, 300)
        calls = r.integers(0, 3, 300)
        v = judge_calls(calls, y, {"majority": np.full(300, 1), "previous": previous_of(y)})
        said_beats += v.verdict == "beats"
    assert said_beats <= 10  # at most 5% of 200 nulls


def test_the_exact_mcnemar_p_value_equals_scipys_binomial_test() -> None:
    from scipy.stats import binomtest

    from shared.verdicts import exact_mcnemar_p

    for b, c in [(0, 0), (1, 0), (0, 1), (5, 1), (7, 6), (77, 76), (49, 31), (300, 250), (1, 1)]:
        expected = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        assert exact_mcnemar_p(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)
