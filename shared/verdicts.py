"""Whether direction calls beat naive baselines: a paired test and a three-way verdict.

One rule for every answer that says "beats the baselines" (the predictor's training result,
`/performance`, `/predict`, `/predict_range`, the backtest's ML walk-forward): the model and
each baseline called the same realised bars, so they are compared pair by pair with the
exact McNemar test, a two-sided binomial test of the discordant bars
(``scipy.stats.binomtest(b, b + c, 0.5)``; b = bars only the model called right, c = bars
only the baseline called right). The verdict is

- ``insufficient_evidence`` below ``min_calls`` realised calls (default 100), whatever the
  accuracies: a handful of bars cannot tell a model from its baseline;
- ``beats`` when, against EVERY baseline, b > c and p < ``alpha`` (0.05) (an
  intersection-union test: each comparison at alpha, no multiplicity correction needed);
- ``does_not_beat`` otherwise.

Pure functions and frozen pydantic models (numpy and scipy in, JSON-ready out), so both
services declare the verdict once and answer it in the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

VerdictName = Literal["beats", "does_not_beat", "insufficient_evidence"]
MIN_CALLS = 100
ALPHA = 0.05
TEST = "exact McNemar test (two-sided binomial test of the discordant bars at p = 0.5)"
BASELINE_NAMES = {
    "majority": "the majority class",
    "previous": "yesterday's direction",
}


class Comparison(BaseModel):
    """The model against one baseline on the same realised bars."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(description="Realised bars both called.")
    model_correct: int = Field(description="Bars the model called right.")
    baseline_correct: int = Field(description="Bars the baseline called right.")
    model_only: int = Field(description="b: bars only the model called right.")
    baseline_only: int = Field(description="c: bars only the baseline called right.")
    p_value: float = Field(
        description="Exact McNemar p-value (two-sided binomial test of b of b + c at 0.5); "
        "1 when the two never disagree."
    )


class PairedVerdict(BaseModel):
    """The three-way verdict of a model's calls against the naive baselines, and why."""

    model_config = ConfigDict(frozen=True)

    verdict: VerdictName = Field(
        description="`beats`: n >= min_calls and, against every baseline, more bars only the "
        "model called right than only the baseline (b > c) with p < alpha; "
        "`insufficient_evidence`: fewer than min_calls realised out-of-sample calls; "
        "`does_not_beat`: otherwise."
    )
    n: int = Field(description="Realised out-of-sample calls judged.")
    min_calls: int = Field(description="Realised calls below which no verdict is given.")
    alpha: float = Field(description="Significance level of each comparison.")
    test: str = Field(default=TEST, description="The paired test behind the verdict.")
    baselines: dict[str, Comparison] = Field(
        default_factory=dict, description="Per baseline: the counts and the p-value."
    )


def exact_mcnemar_p(b: int, c: int) -> float:
    """Return the two-sided exact McNemar p-value: a binomial test of b in b + c at 1/2.

    Equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (tested), in integer arithmetic
    so that serving a prediction never imports scipy.stats (about a second of start-up).
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if 2 * k == n:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, float(2 * tail / 2**n))


def mcnemar(model_correct: Any, baseline_correct: Any) -> Comparison:
    """Return the exact McNemar comparison of two classifiers' correctness on the same bars."""
    a = np.asarray(model_correct, dtype=bool)
    c_ = np.asarray(baseline_correct, dtype=bool)
    if a.shape != c_.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of the same length, got {a.shape} and {c_.shape}")
    b = int(np.sum(a & ~c_))
    c = int(np.sum(~a & c_))
    p = exact_mcnemar_p(b, c)
    return Comparison(
        n=int(a.size),
        model_correct=int(a.sum()),
        baseline_correct=int(c_.sum()),
        model_only=b,
        baseline_only=c,
        p_value=min(1.0, p),
    )


def judge(
    model_correct: Any,
    baselines_correct: Mapping[str, Any],
    *,
    min_calls: int = MIN_CALLS,
    alpha: float = ALPHA,
) -> PairedVerdict:
    """Return the three-way verdict of the model's correctness against each baseline's."""
    if not baselines_correct:
        raise ValueError("no baselines to compare with")
    if min_calls < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need min_calls >= 1 and 0 < alpha < 1, got {min_calls}, {alpha}")
    comparisons = {k: mcnemar(model_correct, v) for k, v in baselines_correct.items()}
    n = int(np.asarray(model_correct).size)
    return decide(n, comparisons, min_calls=min_calls, alpha=alpha)


def decide(
    n: int,
    comparisons: Mapping[str, Comparison],
    *,
    min_calls: int = MIN_CALLS,
    alpha: float = ALPHA,
) -> PairedVerdict:
    """Return the verdict of stored comparisons (their counts suffice) at min_calls, alpha."""
    name: VerdictName
    if n < min_calls or not comparisons:
        name = "insufficient_evidence"
    elif all(c.model_only > c.baseline_only and c.p_value < alpha for c in comparisons.values()):
        name = "beats"
    else:
        name = "does_not_beat"
    return PairedVerdict(
        verdict=name, n=n, min_calls=min_calls, alpha=alpha, baselines=dict(comparisons)
    )


def judge_calls(
    calls: Any,
    outcomes: Any,
    baseline_calls: Mapping[str, Any],
    *,
    min_calls: int = MIN_CALLS,
    alpha: float = ALPHA,
) -> PairedVerdict:
    """Return :func:`judge` of class calls and each baseline's calls against the outcomes."""
    y = np.asarray(outcomes)
    return judge(
        np.asarray(calls) == y,
        {k: np.asarray(v) == y for k, v in baseline_calls.items()},
        min_calls=min_calls,
        alpha=alpha,
    )


def no_evidence(min_calls: int = MIN_CALLS, alpha: float = ALPHA) -> PairedVerdict:
    """Return the verdict of no realised calls at all."""
    return PairedVerdict(verdict="insufficient_evidence", n=0, min_calls=min_calls, alpha=alpha)


def describe(v: PairedVerdict, *, subject: str = "the model", where: str = "out of sample") -> str:
    """Return the verdict in plain words, with the test, the sample and the counts."""
    parts = "; ".join(
        f"{BASELINE_NAMES.get(k, k)} {c.model_correct} vs {c.baseline_correct} right, "
        f"b={c.model_only} bars only {subject} right, c={c.baseline_only} only the baseline, "
        f"p={c.p_value:.3g}"
        for k, c in sorted(v.baselines.items())
    )
    counts = f": {parts}" if parts else ""
    who = f"{subject[0].upper()}{subject[1:]}"
    if v.verdict == "insufficient_evidence":
        return (
            f"Insufficient evidence {where}: {v.n} realised call(s), fewer than the "
            f"{v.min_calls} a verdict needs{counts}. Treat the calls as unproven."
        )
    if v.verdict == "beats":
        return (
            f"{who} beats the naive baselines {where}: on {v.n} realised calls, by the {v.test}, "
            f"p < {v.alpha:g} against each{counts}."
        )
    return (
        f"{who} does NOT beat the naive baselines {where}: on {v.n} realised calls, by the "
        f"{v.test}, beating needs more bars only {subject} got right with p < {v.alpha:g} "
        f"against each{counts}. Treat its calls as no better than naive."
    )
