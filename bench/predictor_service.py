"""Predictor service figures for bench/predictor.py: `/predict` over HTTP, gateway cold start.

Both run on a temporary data folder whose SQLite database holds the full-size model trained
by the training section (stored through the service's own registry, as a training job
would store it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from services.market.app import create_app as market_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from services.predictor.app import create_app as predictor_app
from services.predictor.evaluation import clean_json
from services.predictor.registry import Registry
from services.predictor.settings import PredictorSettings
from shared.cache import Cache
from shared.db import Database
from shared.http import unregister_local_app
from trading.cli import free_port, serve_in_thread
from trading.host import build_platform_app

TRADING = Path(sys.executable).absolute().parent / "trading"


def store_model(data_dir: Path, model: Any, symbol: str) -> None:
    """Store a trained EnsembleModel as version 1.0.0 of `default` in data_dir's database."""

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{data_dir / 'trading.db'}")
        await db.migrate()
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


def http_bench(data_dir: Path, symbol: str, n: int) -> list[str]:
    """Time POST /predict over loopback HTTP: first call, cached calls, uncached calls."""
    db = f"sqlite+aiosqlite:///{data_dir / 'trading.db'}"
    market = market_app(
        MarketSettings(
            data_dir=data_dir,
            database_url=db,
            market_data_dir=SHARED_CSV_DIR,
            market_providers=["csv"],
            log_level="WARNING",
        )
    )
    predictor = predictor_app(
        PredictorSettings(data_dir=data_dir, database_url=db, redis_url=None, log_level="WARNING")
    )
    dates = pd.read_csv(SHARED_CSV_DIR / f"{symbol}.csv", usecols=["date"])["date"].str[:10]
    days = dates.iloc[-(n + 1) : -1].tolist()  # distinct bars: each answer computed anew
    lines = []
    try:
        app = build_platform_app({"market": market, "predictor": predictor})
        with (
            serve_in_thread(app, free_port()) as url,
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

            for day in days[:20]:  # warm the market's feature path
                timed({"symbol": symbol, "as_of": day})
            cached = [timed({"symbol": symbol}) for _ in range(n)]
            uncached = [timed({"symbol": symbol, "as_of": day}) for day in days]
            target = "  [targets: p50 < 10 ms, p99 < 30 ms]"
            lines.append(_summary("cached (the seed's 30 s prediction cache)", cached, target))
            lines.append(_summary("uncached (new as_of: features + inference)", uncached, target))
            perf = http.get("/performance").json()["latency"]
            lines.append(
                f"server-side, all {perf['calls']} logged calls: p50 {perf['p50_ms']:.2f} ms, "
                f"p99 {perf['p99_ms']:.2f} ms (from /performance)"
            )
    finally:
        unregister_local_app("market", market)
        unregister_local_app("predictor", predictor)
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

    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(
        DATA_DIR=str(data_dir),
        XDG_DATA_HOME=str(data_dir),
        MARKET_PROVIDERS="csv",
        MARKET_DATA_DIR=str(SHARED_CSV_DIR),
        FASTMCP_SHOW_SERVER_BANNER="false",
        FASTMCP_CHECK_FOR_UPDATES="off",
        LOG_LEVEL="WARNING",
    )
    params = StdioServerParameters(command=str(TRADING), args=["mcp"], env=env)
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
    """Time a fresh gateway to its first answer: a market call, then a prediction."""
    lines = []
    for label, tool, args in (
        ("market_get_price (no predictor request)", "market_get_price", {"symbol": symbol}),
        ("predictor_predict (loads TensorFlow + model)", "predictor_predict", {"symbol": symbol}),
    ):
        with open(os.devnull, "w") as devnull:
            ready, answered, rss = asyncio.run(_cold(data_dir, tool, args, devnull))
        memory = f", gateway RSS {rss:.0f} MB" if rss else ""
        lines.append(f"{label:<46} ready {ready:5.2f} s, first answer {answered:5.2f} s{memory}")
    return lines
