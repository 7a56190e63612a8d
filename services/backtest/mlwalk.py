"""Walk-forward of the `ml_ensemble` strategy: train in sample, trade out of sample.

Each window's model is trained by the predictor service (`POST /train`, `activate: false`)
on the window's train bars only; a training's labels look `horizon` bars ahead and the
predictor drops the rows whose outcome lies past the training range, so no label reaches
into the test window. With `retrain_every` k, windows 0, k, 2k, ... train a version and
the windows between trade the last one trained (on bars that all precede their test
windows). The version's calls on its training bars are its in-sample run; its calls on the
test bars (`POST /predict_range`, made at each bar's close from data up to it) are traded
out of sample and scored against their realised outcomes beside the naive baselines
(the majority class, yesterday's direction), per window and over all windows: per-bar
correctness is pooled over the windows and judged once by the shared paired rule
(:func:`shared.verdicts.judge`: exact McNemar test against each baseline, `insufficient_evidence`
below 100 realised out-of-sample calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from services.backtest.config import atr_matrix
from services.backtest.engine import core
from services.backtest.engine.core import SimSpec
from services.backtest.engine.runner import Bars, simulate
from services.backtest.metrics import (
    annualized_return,
    calendar_years,
    compute_metrics,
    sharpe_ratio,
)
from services.backtest.optimize import Runner, atr_period_of
from services.backtest.reports import metrics_model
from services.backtest.schemas import (
    HitRates,
    InSample,
    MlWalkForward,
    WalkForwardRequest,
    WalkForwardResult,
    WindowCalls,
    finite,
)
from services.backtest.signals import Calls, Predictor, targets_from_calls
from services.backtest.strategies import MlEnsembleParams
from services.backtest.walkforward import (
    WindowOutcome,
    _slice,
    assemble,
    check_windows,
    trade_test_window,
)
from shared.jobs import JobProgress
from shared.verdicts import PairedVerdict, describe, judge

BASELINES = ("majority", "previous")
# The predictor's training fields -> this request's (a window too short to train on).
TRAIN_FIELDS = {"start_date": "train_period", "symbols[0]": "symbol", "model": "strategy.params"}


@dataclass
class _Version:
    """A trained version and its in-sample run."""

    version: str
    seconds: float
    in_sample: InSample


def _day(ts: np.datetime64) -> date:
    return pd.Timestamp(ts).date()


def in_sample(
    request: WalkForwardRequest,
    bars: Bars,
    target: np.ndarray,
    spec: SimSpec,
    atr_period: int | None,
) -> InSample:
    """Trade a version's calls on its own training bars: the window's in-sample run."""
    atr = atr_matrix(bars, atr_period) if atr_period else None
    sim = simulate(bars, target[:, None], spec, atr)
    r = sim.returns
    with np.errstate(all="ignore"):
        perf = compute_metrics(
            sim.equity,
            sim.initial_capital,
            years=calendar_years(bars.index),
            periods_per_year=spec.periods_per_year,
            risk_free_rate=request.risk_free_rate,
            trade_pnls=sim.trade_pnls,
            exposure=float(sim.counters[core.CNT_EXPOSED]) / max(1, bars.n_bars),
            n_bootstrap=0,
        )
    objective = getattr(metrics_model(perf), request.objective, None)
    return InSample(
        objective=finite(float(objective)) if isinstance(objective, int | float) else None,
        annualized_return=finite(annualized_return(r, spec.periods_per_year)),
        sharpe_ratio=finite(
            sharpe_ratio(r, request.risk_free_rate, spec.periods_per_year)
            if r.size > 1
            else float("nan")
        ),
    )


@dataclass
class _Correct:
    """Per realised out-of-sample bar: whether the model and each baseline called it right."""

    model: list[np.ndarray]
    baselines: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> _Correct:
        return cls([], {k: [] for k in BASELINES})

    def add(self, calls: Calls) -> _Correct:
        """Add one window's calls; return that window's own correctness."""
        one = _correct(calls)
        self.model.extend(one.model)
        for k in BASELINES:
            self.baselines[k].extend(one.baselines[k])
        return one

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

        return cat(self.model), {k: cat(v) for k, v in self.baselines.items()}

    def rates(self) -> HitRates:
        model, base = self.arrays()
        if model.size == 0:
            return HitRates(model=None, majority=None, previous=None)
        return HitRates(
            model=float(model.mean()),
            majority=float(base["majority"].mean()),
            previous=float(base["previous"].mean()),
        )

    def test(self) -> PairedVerdict:
        model, base = self.arrays()
        return judge(model, base)


def _correct(calls: Calls) -> _Correct:
    """Return one window's per-bar correctness on its realised out-of-sample bars.

    The baselines' calls come with the predictor's answer; without them (an older
    predictor) only the hit rates are known and the window is judged on none of its bars.
    """
    known = np.isfinite(calls.outcome)
    if calls.in_sample.size == known.size:
        known &= ~calls.in_sample
    if not all(calls.baselines.get(k, np.zeros(0)).size == known.size for k in BASELINES):
        return _Correct(
            [np.zeros(0, dtype=bool)], {k: [np.zeros(0, dtype=bool)] for k in BASELINES}
        )
    y = calls.outcome[known]
    return _Correct(
        [calls.direction[known] == y],
        {k: [calls.baselines[k][known] == y] for k in BASELINES},
    )


def _reading(summary: MlWalkForward, wf: WalkForwardResult) -> str:
    r = summary.hit_rate

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    return (
        f"Out of sample over {summary.realised} realised bars in {wf.n_windows} windows the "
        f"model called the direction right {pct(r.model)} of the time against "
        f"{pct(r.majority)} for always the majority class and {pct(r.previous)} for "
        f"yesterday's direction. "
        + describe(summary.baseline_test, where="over all windows' out-of-sample bars")
        + f" ({summary.windows_beating_baselines} of {wf.n_windows} windows beat both on "
        "their own, each judged by the same rule.)"
    )


async def ml_walk_forward(
    request: WalkForwardRequest,
    bars: Bars,
    bars_hash: str,
    spec: SimSpec,
    runner: Runner,
    predictor: Predictor,
) -> WalkForwardResult:
    """Train per window through the predictor, trade its calls out of sample, stitch."""
    params = request.strategy.params
    assert isinstance(params, MlEnsembleParams)
    training = params.training
    symbol = bars.symbols[0]
    windows = check_windows(bars.n_bars, request)
    n = len(windows)
    every = request.retrain_every
    trainings = len(range(0, n, every))
    spec_out = spec._replace(warmup=0)
    atr_period = atr_period_of(request)
    # progress: each training counts 10 units, each window's test run 1
    total = float(trainings * 10 + n)
    done = 0.0
    current: _Version | None = None
    outcomes: list[WindowOutcome] = []
    window_calls: list[WindowCalls] = []
    versions: list[str] = []
    correct = _Correct.empty()
    calls_all = 0
    for i, (lo, train_end, test_start, test_end) in enumerate(windows):
        trained_here = i % every == 0
        if trained_here:
            first, last = _day(bars.index[lo]), _day(bars.index[train_end - 1])
            label = f"window {i + 1}/{n}: training {training.model} on {first}..{last}"
            runner.report(done, total, label)
            base = done

            def relay(p: JobProgress, base: float = base, label: str = label) -> None:
                if p.total:
                    share = min(1.0, p.done / p.total)
                    runner.report(base + 9.0 * share, total, f"{label}: {p.message or ''}")

            trained = await predictor.train(
                training, symbol, first, last, on_progress=relay, fields=TRAIN_FIELDS
            )
            done = base + 9.0
            is_calls = await predictor.calls(symbol, training.model, trained.version, first, last)
            train_bars = _slice(bars, lo, train_end)
            is_target = targets_from_calls(is_calls, train_bars.index, params)
            fitted = await runner.run(in_sample, request, train_bars, is_target, spec, atr_period)
            current = _Version(trained.version, trained.seconds, fitted)
            versions.append(trained.version)
            done += 1.0
        assert current is not None
        runner.report(done, total, f"window {i + 1}/{n}: trading {current.version} out of sample")
        oos_calls = await predictor.calls(
            symbol,
            training.model,
            current.version,
            _day(bars.index[test_start]),
            _day(bars.index[test_end - 1]),
        )
        target = targets_from_calls(oos_calls, bars.index[test_start:test_end], params)
        outcome = await runner.run(
            trade_test_window,
            i,
            _slice(bars, lo, test_end),
            test_start - lo,
            target,
            spec_out,
            request.risk_free_rate,
            atr_period,
            {},
            current.in_sample,
        )
        outcomes.append(outcome)
        here = correct.add(oos_calls)
        calls_all += int(oos_calls.days.size)
        rates = here.rates()
        window_test = here.test()
        window_calls.append(
            WindowCalls(
                version=current.version,
                trained=trained_here,
                training_seconds=current.seconds if trained_here else None,
                calls=int(oos_calls.days.size),
                realised=window_test.n,
                hit_rate=rates,
                baseline_test=window_test,
                beats_baselines=window_test.verdict == "beats",
            )
        )
        done += 1.0
    runner.report(total, total, "stitching the out-of-sample windows")
    fixed: dict[str, Any] = params.model_dump()
    result = await runner.run(assemble, request, bars, bars_hash, spec, windows, outcomes, fixed)
    overall = correct.rates()
    test = correct.test()
    summary = MlWalkForward(
        model=training.model,
        versions=versions,
        retrain_every=every,
        training_seconds=round(sum(c.training_seconds or 0.0 for c in window_calls), 3),
        calls=calls_all,
        realised=test.n,
        hit_rate=overall,
        windows_beating_baselines=sum(c.beats_baselines for c in window_calls),
        baseline_test=test,
        beats_baselines=test.verdict == "beats",
        reading="",
    )
    summary = summary.model_copy(update={"reading": _reading(summary, result)})
    windows_out = [
        w.model_copy(update={"ml": c}) for w, c in zip(result.windows, window_calls, strict=True)
    ]
    return result.model_copy(
        update={
            "windows": windows_out,
            "ml": summary,
            "reading": f"{result.reading} {summary.reading}",
        }
    )
