"""Predictor service figures for bench/predictor.py: `/predict` over HTTP, gateway cold start.

Both run on a temporary data folder whose SQLite database holds the full-size model trained
by the training section (stored through the service's own registry, as a training job
would store it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from services.market.settings import SHARED_CSV_DIR
from services.predictor.evaluation import clean_json
from services.predictor.registry import Registry
from services.predictor.tables import SCHEMA
from shared.cache import Cache
from shared.db import Database
from trading.cli import free_port

TRADING = Path(sys.executable).absolute().parent / "trading"
PASSED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "PYTHONPATH",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
PREPARE_S = 15.0  # seconds for the background trace of the LSTM's unrolled inference


def store_model(data_dir: Path, model: Any, symbol: str) -> None:
    """Store a trained EnsembleModel as version 1.0.0 of `default` in data_dir's database."""

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{data_dir / 'trading.db'}")
        await db.migrate(SCHEMA)
        try:
            segments = model.info["segments"][symbol]
            firsts = [s["first"] for s in segments.values() if s["first"]]
            lasts = [s["last"] for s in segments.values() if s["last"]]
            await Registry(db, Cache()).add(
                "default",
                artifacts=model.to_artifacts(),
                hyperparameters={
                    "config": model.config.to_dict(),
                    "feature_names": model.feature_names,
                    "symbols": [symbol],
                },
                training_metrics=clean_json(
                    {
                        "kind": "trained",
                        **model.metrics,
                        "info": model.info,
                        "ensemble": model.ensemble.to_dict(),
                    }
                ),
                data_start=pd.Timestamp(min(firsts), tz="UTC").to_pydatetime(),
                data_end=pd.Timestamp(max(lasts), tz="UTC").to_pydatetime(),
                kind="trained",
            )
        finally:
            await db.dispose()

    asyncio.run(go())


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _summary(name: str, ms: list[float], target: str = "") -> str:
    return (
        f"{name:<44} p50 {_pct(ms, 50):7.2f} ms   p99 {_pct(ms, 99):7.2f} ms   "
        f"mean {statistics.fmean(ms):7.2f} ms  (n={len(ms)}){target}"
    )


def _serve_env(data_dir: Path) -> dict[str, str]:
    """Return the environment of a `trading` subprocess on data_dir (CSV bars, no Redis)."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(
        DATA_DIR=str(data_dir),
        XDG_DATA_HOME=str(data_dir),
        MARKET_PROVIDERS="csv",
        MARKET_DATA_DIR=str(SHARED_CSV_DIR),
        FASTMCP_SHOW_SERVER_BANNER="false",
        FASTMCP_CHECK_FOR_UPDATES="off",
        LOG_LEVEL="WARNING",
    )
    return env


@contextmanager
def serve_process(data_dir: Path) -> Iterator[str]:
    """Run `trading serve` (every service, one uvicorn process) on data_dir; yield its URL."""
    with serve_with_pid(data_dir) as (url, _):
        yield url


@contextmanager
def serve_with_pid(data_dir: Path, **env: str) -> Iterator[tuple[str, int]]:
    """Run `trading serve` on data_dir with extra environment; yield its URL and pid."""
    port = free_port()
    with open(os.devnull, "w") as devnull:
        process = subprocess.Popen(
            [str(TRADING), "serve", "--port", str(port)],
            env={**_serve_env(data_dir), **env},
            stdout=devnull,
            stderr=devnull,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/market/health", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("trading serve did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def year_dates(dates: pd.Series, before: str, n: int) -> list[str]:
    """Return a mid-year bar date of each of the last n years before `before`'s year."""
    by_year = dates.groupby(dates.str[:4]).agg(list)
    years = [y for y in sorted(by_year.index)[2:] if y < before[:4]][-n:]  # past the warm-up
    return [by_year[y][len(by_year[y]) // 2] for y in years]


def http_bench(data_dir: Path, symbol: str, n: int) -> list[str]:
    """Time POST /predict over loopback HTTP against `trading serve` in its own process.

    The first call (model load), cached calls, calls with a new `as_of` each (features taken
    from the year's block the predictor holds, then inference), and calls whose year's
    block is not held yet (the market computes and sends the block first).
    """
    dates = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", usecols=["date"])["date"].str[:10]
    days = dates.iloc[-(n + 1) : -1].tolist()  # distinct bars: each answer computed anew
    warm = dates.iloc[-(n + 21) : -(n + 1)].tolist()  # other bars, same years
    years = year_dates(dates, warm[0], 20)  # years nothing asked for yet
    lines = []
    with (
        serve_process(data_dir) as url,
        httpx.Client(base_url=f"{url}/predictor", timeout=120) as http,
    ):
        t0 = time.perf_counter()
        first = http.post("/predict", json={"symbol": symbol})
        first.raise_for_status()
        lines.append(
            f"first call (loads the model: TensorFlow, Keras file, trace): "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms"
        )

        def timed(body: dict[str, Any]) -> float:
            t = time.perf_counter()
            answer = http.post("/predict", json=body)
            elapsed = (time.perf_counter() - t) * 1000
            answer.raise_for_status()
            return elapsed

        for day in warm:  # warm the market's and the predictor's feature paths
            timed({"symbol": symbol, "as_of": day})
        time.sleep(PREPARE_S)  # the LSTM's unrolled inference is traced in the background
        cached = [timed({"symbol": symbol}) for _ in range(n)]
        uncached = [timed({"symbol": symbol, "as_of": day}) for day in days]
        cold = [timed({"symbol": symbol, "as_of": day}) for day in years]
        target = "  [targets: p50 < 10 ms, p99 < 30 ms]"
        lines.append(_summary("cached (the seed's 30 s prediction cache)", cached, target))
        lines.append(_summary("uncached (new as_of: inference)", uncached, target))
        lines.append(_summary("uncached, year not fetched yet (+ features)", cold))
        perf = http.get("/performance").json()["latency"]
        lines.append(
            f"server-side, all {perf['calls']} logged calls: p50 {perf['p50_ms']:.2f} ms, "
            f"p99 {perf['p99_ms']:.2f} ms (from /performance)"
        )
    return lines


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children(parent: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            out.add(int(stat.parent.name))
    return out


async def _cold(
    data_dir: Path, tool: str, args: dict[str, Any], errlog: Any
) -> tuple[float, float, Any]:
    """Start `trading mcp`, call one tool; return (s to ready, s to the answer, RSS MB)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=str(TRADING), args=["mcp"], env=_serve_env(data_dir))
    before = _children(os.getpid())
    t0 = time.perf_counter()
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        ready = time.perf_counter() - t0
        result = await session.call_tool(tool, args)
        answered = time.perf_counter() - t0
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")
        pids = _children(os.getpid()) - before
        rss = sum(_rss_mb(p) or 0.0 for p in pids) or None
    return ready, answered, rss


def cold_start_bench(data_dir: Path, symbol: str) -> list[str]:
    """Time a fresh gateway to its first answer: a market call, then a prediction.

    Targets (issue 13): the first prediction of a fresh process under 2 s (the call itself,
    after the gateway is ready), the gateway under 700 MB after it (no TensorFlow).
    """
    lines = []
    for label, tool, args in (
        ("market_get_price (no predictor request)", "market_get_price", {"symbol": symbol}),
        (
            "predictor_predict (loads the model; numba LSTM)",
            "predictor_predict",
            {"symbol": symbol},
        ),
    ):
        with open(os.devnull, "w") as devnull:
            ready, answered, rss = asyncio.run(_cold(data_dir, tool, args, devnull))
        memory = f", gateway RSS {rss:.0f} MB" if rss else ""
        lines.append(
            f"{label:<48} ready {ready:5.2f} s, first answer {answered:5.2f} s "
            f"(the call {answered - ready:5.2f} s){memory}"
        )
    lines.append("  [targets: the first predictor_predict call < 2 s, gateway RSS < 700 MB]")
    return lines


def _tree(root: int) -> set[int]:
    """Return root and every process below it."""
    out, todo = {root}, [root]
    while todo:
        for child in _children(todo.pop()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _tree_rss(root: int) -> tuple[float, int]:
    pids = _tree(root)
    return sum(_rss_mb(p) or 0.0 for p in pids), len(pids)


def process_bench(
    data_dir: Path, symbol: str, *, idle_s: float, lstm: str, epochs: int
) -> list[str]:
    """Train through `trading serve`, predict, then measure the process tree once idle.

    The training runs in a job worker (TensorFlow there only); the worker exits after
    JOB_PROCESS_IDLE_S without work (default 60 s; idle_s here). The version stays in
    data_dir as `default` for the cold-start figures.
    """
    body = {"symbols": [symbol], "lstm": {"size": lstm, "epochs": epochs}}
    with (
        serve_with_pid(data_dir, JOB_PROCESS_IDLE_S=str(idle_s)) as (url, pid),
        httpx.Client(base_url=f"{url}/predictor", timeout=120) as http,
    ):
        start_rss, _ = _tree_rss(pid)
        t0 = time.perf_counter()
        started = http.post("/train", json=body)
        started.raise_for_status()
        location = started.headers["location"].removeprefix("/predictor")
        while (status := http.get(location).json())["status"] not in ("succeeded", "failed"):
            time.sleep(0.5)
        trained_s = time.perf_counter() - t0
        if status["status"] != "succeeded":
            return [f"training failed after {trained_s:.1f} s: {status['error']}"]
        busy_rss, busy_n = _tree_rss(pid)
        t1 = time.perf_counter()
        http.post("/predict", json={"symbol": symbol}).raise_for_status()
        first_ms = (time.perf_counter() - t1) * 1000
        server_rss = _rss_mb(pid) or 0.0
        tensorflow = http.get("/health").json().get("tensorflow_loaded")
        time.sleep(idle_s + 15)
        idle_rss, idle_n = _tree_rss(pid)
    return [
        f"trading serve at start: process tree {start_rss:.0f} MB",
        f"training (LSTM {lstm}, <= {epochs} epochs + XGBoost, in a job worker): "
        f"{trained_s:.1f} s; tree right after: {busy_rss:.0f} MB in {busy_n} processes",
        f"first /predict of the server: {first_ms:.0f} ms; server RSS after it "
        f"{server_rss:.0f} MB, TensorFlow in the server: {tensorflow}  [target < 700 MB]",
        f"{idle_s + 15:.0f} s after the training (JOB_PROCESS_IDLE_S={idle_s:g}): tree "
        f"{idle_rss:.0f} MB in {idle_n} processes  [target < 900 MB 5 minutes after]",
    ]


def service_walk_forward_bench(
    data_dir: Path,
    symbol: str,
    *,
    years: int,
    train_bars: int,
    test_bars: int,
    retrain_every: int,
    lstm: str,
    epochs: int,
    seed: int,
) -> list[str]:
    """Time `POST /backtest/walk_forward` with `ml_ensemble` against `trading serve`: each
    window's version trained by the predictor over HTTP, its calls traded with costs."""
    dates = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", usecols=["date"])["date"].str[:10]
    end = dates.iloc[-1]
    start = dates.iloc[-(years * 252)]
    body = {
        "symbol": symbol,
        "start_date": start,
        "end_date": end,
        "initial_capital": 10_000,
        "strategy": {
            "name": "ml_ensemble",
            "params": {
                "min_confidence": 0.4,
                "training": {
                    "model": "bench-walk-forward",
                    "lstm_size": lstm,
                    "epochs": epochs,
                    "seed": seed,
                },
            },
        },
        "commission_rate": 0.001,
        "slippage": 0.0005,
        "warmup_period": 0,
        "train_period": train_bars,
        "test_period": test_bars,
        "retrain_every": retrain_every,
    }
    with (
        serve_process(data_dir) as url,
        httpx.Client(base_url=f"{url}/backtest", timeout=120) as http,
    ):
        t0 = time.perf_counter()
        started = http.post("/walk_forward", json=body)
        if started.status_code != 202:
            return [f"walk-forward refused: {started.status_code} {started.text[:300]}"]
        location = started.headers["location"].removeprefix("/backtest")
        while True:
            status = http.get(location).json()
            if status["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        wall = time.perf_counter() - t0
    if status["status"] != "succeeded":
        return [f"walk-forward failed after {wall:.1f} s: {status['error']}"]
    wf = status["result"]
    ml = wf["ml"]
    h = ml["hit_rate"]
    m, b = wf["metrics"], wf["benchmark"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    return [
        f"{symbol} {start}..{end}: {wf['n_windows']} windows of {train_bars} + {test_bars} "
        f"bars, {len(ml['versions'])} trainings (LSTM {lstm}, <= {epochs} epochs + XGBoost) "
        f"through the predictor over HTTP",
        f"wall time {wall:.1f} s (training {ml['training_seconds']:.1f} s of it)",
        f"out-of-sample hit rate over {ml['realised']} realised bars: model {pct(h['model'])}, "
        f"majority class {pct(h['majority'])}, yesterday's direction {pct(h['previous'])}; "
        f"beats both: {ml['beats_baselines']} ({ml['windows_beating_baselines']} of "
        f"{wf['n_windows']} windows)",
        f"trading the calls (min_confidence 0.4, 0.1% commission, 5 bp slippage): return "
        f"{pct(m['total_return'])}, Sharpe {m['sharpe_ratio'] or float('nan'):.2f}, max drawdown "
        f"{pct(m['max_drawdown'])}; buy-and-hold {pct(b['total_return'])}",
    ]
