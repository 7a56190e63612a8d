"""Adversarial load (issue 14, sections 1, 2 and 5): a cached price stays fast beside abuse.

Run: `.venv/bin/python bench/load.py --scenario <name>` (or `bench/adversarial.py [names]`).
Each scenario starts `trading serve` (as `bench/load.py` does: fresh PostgreSQL database,
private redis-server, CSV provider), stores what it needs, then runs its attack clients
beside a few clients reading the cached `GET /market/price/AAPL`, and reports the price's
p50/p99/max next to the attack's answers:

- optimize_422:   10 at a time, a macd_trend grid over 1990-2023 over the trial-bar limit
                  (each a 422; counted before the grid is built);
- optimize_cscv:  sma fast 2-500 x slow 3-1000 on 45 bars with 16 CSCV blocks (a job by the
                  whole cost, not a direct answer), each job cancelled a second later;
- chart:          6 at a time, charts of a stored run at random sizes (snapped, off-GIL);
- results_list:   10 at a time, `GET /backtest/results?limit=1000` over 200 stored runs;
- monte_carlo:    30 at a time, Monte Carlo with n_runs=1 of one stored run;
- predict_range:  12 at a time, a model version's calls on every bar of 20 years (the model
                  trained first: the seed LSTM for one epoch and XGBoost, on 2018-2019),
                  with the server's RSS before, at its peak and 5 s after (and its process
                  tree's: job workers included);
- idle:           no attack: the same price readers alone (the machine's own baseline).

Target: the cached price's p99 < 50 ms in every scenario (same machine, same run).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import RedisServer  # noqa: E402
from bench.load import ADVERSARIAL, PG_ADMIN, Conn, Server, admin, start_server  # noqa: E402
from bench.memory import rss_mb, tree_rss_mb  # noqa: E402
from shared.jobs import cancel_path  # noqa: E402

SCENARIOS = ADVERSARIAL  # declared beside bench/load.py's own scenarios
PRICE = "/market/price/AAPL"
PRICE_CLIENTS = 4
TARGET_P99_MS = 50.0
RUN = {
    "symbol": "AAPL",
    "start_date": "2010-01-01",
    "end_date": "2020-01-01",
    "strategy": {"name": "mean_reversion", "params": {"allow_short": True}},
}


TRAIN = {
    "symbols": ["AAPL"],
    "start_date": "2018-01-01",
    "end_date": "2019-12-31",
    "lstm": {"epochs": 1},
    "seed": 5,
}
PREDICT_RANGE = {"symbol": "AAPL", "start": "2003-11-03", "end": "2023-10-27"}  # 20 years
SETTLE_S = 5.0  # idle time before the "after" memory figure
RANGE_TIMEOUT_S = 900.0  # one wave of 20-year ranges on a 2-core machine takes minutes
SAMPLE_S = 0.1


def _optimize_422() -> tuple[str, str, dict[str, Any]]:
    grid = {
        "fast": {"start": 2, "stop": 100, "step": 1},
        "slow": {"start": 3, "stop": 300, "step": 1},
    }
    body = {
        "symbol": "AAPL",
        "start_date": "1990-01-02",
        "end_date": "2023-12-29",
        "strategy": {"name": "macd_trend", "params": {}},
        "param_grid": grid,
    }
    return "POST", "/backtest/optimize", body


def _optimize_cscv() -> tuple[str, str, dict[str, Any]]:
    body = {
        "symbol": "AAPL",
        "start_date": "2010-01-04",
        "end_date": "2010-03-09",
        "strategy": {"name": "sma_crossover", "params": {}},
        "pbo_splits": 16,
        "param_grid": {
            "fast": {"start": 2, "stop": 500, "step": 1},
            "slow": {"start": 3, "stop": 1000, "step": 1},
        },
    }
    return "POST", "/backtest/optimize", body


async def _price_client(port: int, until: float, out: list[float], stop: asyncio.Event) -> None:
    conn = Conn(port)
    while time.monotonic() < until and not stop.is_set():
        began = time.monotonic()
        status = await conn.get(PRICE)
        if status == 200:
            out.append((time.monotonic() - began) * 1000)
        await asyncio.sleep(0.01)
    conn.close()


async def _attack(
    http: httpx.AsyncClient,
    make: Callable[[], Awaitable[int]],
    until: float,
    outcomes: Counter[str],
) -> None:
    while True:  # at least once: a one-wave attack passes until=now
        try:
            outcomes[str(await make())] += 1
        except httpx.HTTPError as e:
            outcomes[type(e).__name__] += 1
        if time.monotonic() >= until:
            return


async def _store_runs(http: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {**RUN, "strategy": {"name": "mean_reversion", "params": {"rsi_period": 5 + i % 20}}}
        answer = await http.post("/backtest/backtest", json=body)
        answer.raise_for_status()
        ids.append(answer.json()["run_id"])
    return ids


async def _train(http: httpx.AsyncClient) -> None:
    """Train the predictor's default model (a job); return once it succeeded."""
    started = await http.post("/predictor/train", json=TRAIN)
    started.raise_for_status()
    while True:
        status = (await http.get(started.headers["location"], params={"wait_s": 30})).json()
        if status["status"] == "succeeded":
            return
        if status["status"] == "failed":
            raise RuntimeError(f"training failed: {status['error']}")


class Memory:
    """The server's RSS (and its process tree's) before, at the peak of, and after an attack."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.figures: dict[str, tuple[float, float]] = {}
        self.peak = (0.0, 0.0)

    def now(self) -> tuple[float, float]:
        """Return (server RSS MB, process tree RSS MB)."""
        if self.pid is None:
            return 0.0, 0.0
        return rss_mb(self.pid) or 0.0, tree_rss_mb(self.pid)[0]

    async def sample(self, until: float, stop: asyncio.Event) -> None:
        """Keep the highest figures seen until the attack ends."""
        while time.monotonic() < until and not stop.is_set():
            server, whole = self.now()
            self.peak = (max(self.peak[0], server), max(self.peak[1], whole))
            await asyncio.sleep(SAMPLE_S)

    def report(self) -> dict[str, str]:
        """Return the printed figures: MB before / peak / after, server and tree."""
        if self.pid is None or not self.figures:
            return {}
        before, after = self.figures["before"], self.figures["after"]
        return {
            "server RSS MB": f"{before[0]:.0f}/{self.peak[0]:.0f}/{after[0]:.0f}",
            "tree RSS MB": f"{before[1]:.0f}/{self.peak[1]:.0f}/{after[1]:.0f}",
        }


async def run(
    name: str, port: int, duration: float, concurrency: int | None, pid: int | None = None
) -> dict[str, str]:
    """Run one attack beside the price readers; return the printed figures.

    pid is the server's process id, for the memory figures of `predict_range`.
    """
    memory = Memory(pid if name == "predict_range" else None)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        rng = random.Random(7)
        first = await http.get(PRICE)
        first.raise_for_status()
        runs = await _store_runs(http, 200 if name == "results_list" else 1)
        if name == "predict_range":
            await _train(http)

        async def send(spec: tuple[str, str, dict[str, Any]]) -> httpx.Response:
            method, path, body = spec
            return await http.request(method, path, json=body)

        async def optimize_422() -> int:
            return (await send(_optimize_422())).status_code

        async def optimize_cscv() -> int:
            answer = await send(_optimize_cscv())
            if answer.status_code == 202:
                await asyncio.sleep(1.0)
                await http.post(cancel_path(answer.headers["location"]))
            return answer.status_code

        async def chart() -> int:
            size = {"width": rng.randrange(300, 2400), "height": rng.randrange(200, 1600)}
            return (
                await http.get(f"/backtest/results/{runs[0]}/chart.png", params=size)
            ).status_code

        async def results_list() -> int:
            return (await http.get("/backtest/results", params={"limit": 1000})).status_code

        async def monte_carlo() -> int:
            body = {"run_id": runs[0], "n_runs": 1}
            return (await http.post("/backtest/monte_carlo", json=body)).status_code

        waits: list[float] = []

        async def predict_range() -> int:
            began = time.monotonic()
            answer = await http.post(
                "/predictor/predict_range", json=PREDICT_RANGE, timeout=RANGE_TIMEOUT_S
            )
            waits.append(time.monotonic() - began)
            return answer.status_code

        async def idle() -> int:
            await asyncio.sleep(0.5)
            return 0

        attacks = {
            "idle": (idle, 1),
            "optimize_422": (optimize_422, 10),
            "optimize_cscv": (optimize_cscv, 2),
            "chart": (chart, 6),
            "results_list": (results_list, 10),
            "monte_carlo": (monte_carlo, 30),
            "predict_range": (predict_range, 12),
        }
        make, default = attacks[name]
        wave = name == "predict_range"  # one request per attacker, all at once, to the end
        began = time.monotonic()
        until = began + (RANGE_TIMEOUT_S if wave else duration)
        stop = asyncio.Event()
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()

        async def attackers() -> None:
            attack_until = began if wave else until
            n = concurrency or default
            await asyncio.gather(*(_attack(http, make, attack_until, outcomes) for _ in range(n)))
            stop.set()

        memory.figures["before"] = memory.now()
        await asyncio.gather(
            *(_price_client(port, until, latencies, stop) for _ in range(PRICE_CLIENTS)),
            attackers(),
            memory.sample(until, stop),
        )
        if memory.pid is not None:  # the attack's last answers are in: let the server settle
            await asyncio.sleep(SETTLE_S)
            memory.figures["after"] = memory.now()
    lat = np.array(latencies)
    p99 = float(np.percentile(lat, 99))
    return {
        "attack answers": " ".join(f"{k}x{v}" for k, v in sorted(outcomes.items())),
        "price requests": str(lat.size),
        "price p50 ms": f"{np.percentile(lat, 50):.1f}",
        "price p99 ms": f"{p99:.1f} ({'<' if p99 < TARGET_P99_MS else '>='} 50)",
        "price max ms": f"{lat.max():.0f}",
        **memory.report(),
        **({"range answers s": f"{min(waits):.1f}-{max(waits):.1f}"} if waits else {}),
    }


def scenario(root: Path, name: str, duration: float) -> dict[str, str]:
    """Run one adversarial scenario against a fresh server, database and redis-server."""
    db = f"bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    redis = RedisServer()
    redis.start()
    server: Server | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-adversarial-"))
    try:
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        server = start_server(root, f"{url}/{db}", redis.port, tmp)
        figures = asyncio.run(run(name, server.port, duration, None, server.proc.pid))
        figures["log tracebacks"] = str(server.lines("Traceback"))
        return figures
    finally:
        if server is not None:
            server.stop()
        redis.kill()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: dict[str, dict[str, str]]) -> None:
    """Print one column per scenario."""
    names = list(results)
    width = max(18, *(len(n) + 2 for n in names))
    keys = [k for k in next(iter(results.values())) if k != "attack answers"]
    print(f"{'':<20}" + "".join(f"{n:>{width}}" for n in names))
    for key in keys:
        row = "".join(f"{results[n].get(key, '-'):>{width}}" for n in names)
        print(f"{key:<20}{row}")
    for n in names:  # the attack's answers are long: one line each
        print(f"{n}: {results[n]['attack answers']}")


def main(names: list[str] | None = None, root: Path = ROOT, duration: float = 10.0) -> None:
    """Run the named scenarios (default: all) and print them side by side."""
    results = {}
    for name in names or SCENARIOS:
        print(f"running {name} against {root} ...", file=sys.stderr, flush=True)
        results[name] = scenario(root, name, duration)
    print(f"\n{PRICE_CLIENTS} clients reading cached {PRICE} beside each attack, {duration:g} s")
    print_table(results)


if __name__ == "__main__":
    main(sys.argv[1:] or None)
