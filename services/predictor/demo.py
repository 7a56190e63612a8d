"""The predictor's part of `make demo`: train a small model over HTTP, predict, be honest.

:func:`run_demo` talks to a running predictor service through its HTTP contract only (a
`httpx.Client` whose `base_url` is the service, e.g. `http://127.0.0.1:8000/predictor`
under `trading serve`): it trains a small LSTM + XGBoost version of the model `demo` on
the symbol's last five years or from `start_date` (a job; its progress is printed per
epoch and member), prints the out-of-sample figures beside the naive baselines and the
three-way verdict (`beats | does_not_beat | insufficient_evidence`, with the exact McNemar
counts), predicts the latest bar, then predicts each of the last `days` bars and
prints the live record of those calls, and the first call's time (the version's load) apart
from the percentiles of the later ones. It returns the training result, the prediction and
the performance answers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

METRICS = ("accuracy", "f1", "brier", "sharpe")


def wait_for_job(
    http: httpx.Client,
    answer: httpx.Response,
    echo: Callable[[str], None],
    *,
    limit_s: float = 900.0,
) -> dict[str, Any]:
    """Follow a `202` job answer to its end, echoing new progress messages; return its status."""
    if answer.status_code != 202:
        raise RuntimeError(f"expected a job, got {answer.status_code}: {answer.text[:300]}")
    url = str(answer.url.join(answer.headers["location"]))
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        status: dict[str, Any] = http.get(url).json()
        message = status["progress"].get("message")
        if message and message != last:
            echo(f"  {message}")
            last = message
        if status["status"] in ("succeeded", "failed"):
            return status
        time.sleep(0.25)
    raise RuntimeError(f"job {url} did not finish within {limit_s:.0f} s")


def figures_table(evaluation: dict[str, Any]) -> list[str]:
    """Return the lines of one evaluation: members, ensemble and baselines side by side."""
    lines = [f"  {'':<22}" + "".join(f"{k:>10}" for k in METRICS)]
    rows = [(name, figs) for name, figs in evaluation.get("members", {}).items()]
    if evaluation.get("ensemble"):
        rows.append(("ensemble", evaluation["ensemble"]))
    rows += [(f"baseline: {k}", v) for k, v in evaluation.get("baselines", {}).items()]
    if evaluation.get("climatology"):
        rows.append(("baseline: climatology", evaluation["climatology"]))
    for name, figs in rows:
        lines.append(f"  {name:<22}" + "".join(f"{figs[k]:>10.3f}" for k in METRICS))
    return lines


def verdict_lines(answer: dict[str, Any]) -> list[str]:
    """Return the three-way verdict with its test and counts, then the plain sentence."""
    test = answer["baseline_test"]
    pairs = "; ".join(
        f"vs {k}: b={c['model_only']} c={c['baseline_only']} p={c['p_value']:.3g}"
        for k, c in sorted(test["baselines"].items())
    )
    head = (
        f"verdict: {test['verdict']} (exact McNemar, n={test['n']} realised out-of-sample "
        f"calls, minimum {test['min_calls']}" + (f"; {pairs})" if pairs else ")")
    )
    return [head, f"  {answer['verdict']}"]


def run_demo(
    http: httpx.Client,
    *,
    symbol: str = "AAPL",
    days: int = 20,
    epochs: int = 5,
    start_date: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a small model, predict with it, and print its calls beside the baselines.

    start_date (YYYY-MM-DD) shortens the training range; default: the last five years.
    """
    since = f"since {start_date}" if start_date else "over the last 5 years"
    echo(f"Training a small LSTM + XGBoost on {symbol} {since} (model `demo`)...")
    body: dict[str, Any] = {
        "model": "demo",
        "symbols": [symbol],
        "start_date": start_date,
        "lstm": {"size": "small", "epochs": epochs},
    }
    status = wait_for_job(http, http.post("/train", json=body), echo)
    if status["status"] != "succeeded":
        raise RuntimeError(f"training failed: {status['error']}")
    trained: dict[str, Any] = status["result"]
    echo(
        f"version {trained['version']}: trained {trained['start_date']}..{trained['end_date']} "
        f"in {trained['training_seconds']:.1f} s, rows {trained['rows']}"
    )
    echo(f"out of sample (test segment, {trained['test']['rows']} bars):")
    for line in figures_table(trained["test"]):
        echo(line)
    for line in verdict_lines(trained):
        echo(line)
    for name, reason in trained.get("weight_reasons", {}).items():
        echo(f"  {name}: weight {trained['weights'].get(name, 0.0):.2f}, {reason}")

    start = time.perf_counter()
    call: dict[str, Any] = http.post("/predict", json={"symbol": symbol, "model": "demo"}).json()
    first_ms = (time.perf_counter() - start) * 1000.0
    probs = call["probabilities"]
    head = f"\n{symbol} at {call['as_of'][:10]}, next {call['horizon']} bar"
    echo(
        f"{head}: {call['direction'].upper()}"
        f" (down {probs['down']:.2f}, neutral {probs['neutral']:.2f}, up {probs['up']:.2f}); "
        + ", ".join(
            f"{name} says {max(m['probabilities'], key=m['probabilities'].get)} "
            f"(weight {m['weight']:.2f})"
            for name, m in call["members"].items()
        )
    )

    history = _recent_days(call["as_of"][:10], days)
    round_trips = []
    for day in history:
        start = time.perf_counter()
        http.post("/predict", json={"symbol": symbol, "model": "demo", "as_of": day})
        round_trips.append((time.perf_counter() - start) * 1000.0)
    performance: dict[str, Any] = http.get(
        "/performance", params={"model": "demo", "symbol": symbol}
    ).json()
    echo(
        f"\nlive record of {performance['predictions']} calls on {symbol}'s last bars "
        f"({performance['realised']} realised, {performance['out_of_sample']} of them out of "
        f"sample, {performance['pending']} pending):"
    )
    if performance.get("ensemble"):
        for line in figures_table(performance):
            echo(line)
    for line in verdict_lines(performance):
        echo(line)
    for line in latency_lines(first_ms, round_trips):
        echo(line)
    return {"trained": trained, "prediction": call, "performance": performance}


def latency_lines(first_ms: float, later_ms: list[float]) -> list[str]:
    """Return the first /predict's time (it loads the version) apart from the later calls'.

    A percentile over all calls would mix the one-off model load into the steady state.
    """
    lines = [f"first /predict: {first_ms:.0f} ms (loads the version into this process)"]
    if later_ms:
        p50, p99 = np.percentile(np.asarray(later_ms), [50, 99])
        lines.append(
            f"/predict after it: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(later_ms)} calls "
            "(round trip)"
        )
    return lines


def _recent_days(last: str, days: int) -> list[str]:
    """Return the weekdays of about `days` trading days up to last, oldest first."""
    end = dt.date.fromisoformat(last)
    span = [end - dt.timedelta(days=k) for k in range(int(days * 1.45), -1, -1)]
    return [d.isoformat() for d in span if d.weekday() < 5]
