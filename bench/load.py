"""Load and fault bench: 500 concurrent HTTP clients against `trading serve`, three scenarios.

Run: `.venv/bin/python bench/load.py [--root PATH ...] [--clients 500] [--duration 36]`.
For each checkout given with `--root` (default: this one) and each scenario, the bench starts
`python -m trading.cli serve` from that checkout as a subprocess on a free port, on a fresh
PostgreSQL database (behind a TCP proxy the bench controls) and a private `redis-server` on a
free port (never the shared one on 6379), with short TTLs (`INDICATOR_TTL_S=10
PRICE_TTL_S=15`) and the CSV provider. It primes `/price`, `/indicators` and `/rsi` of a few
symbols once every client is connected (each opens its keep-alive connection and sends one
warm-up request first; "clients connected in" says how long that took), then runs the
clients (a minimal keep-alive HTTP/1.1 client, 30 s timeout each):

- expiry:   cached answers across several cache expiries (steady window before the first);
- redis:    the same, with the redis-server SIGKILLed a third of the way in and restarted at
            two thirds;
- database: the same, one request in ten for a history window never asked before (it
            needs the database), with the database proxy refusing connections (open ones
            reset) from 9 s, silently dropping every byte from 15 s, forwarding from 27 s.

It prints one column per (checkout, scenario): throughput, p50, p99, max, errors, timeouts,
503s, the max across the expiries against the steady p99, the slowest request started
during the database fault against the configured bound, the server's log lines for Redis
going down and coming back and for database 503s, and the rows lost, duplicated or changed
in `market_data` (checked against the CSV files for every range the service recorded as
fetched). `--scenario idle|optimize_422|optimize_cscv|chart|results_list|monte_carlo|
predict_range` runs issue 14's adversarial scenarios instead (bench/adversarial.py: the
cached price's p99 beside each attack). Targets: 0 errors and 0 timeouts;
max across an expiry < 2x the steady p99; every request during the fault answered (data or
503) within the bound; 0 rows lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import Proxy, RedisServer, free_port  # noqa: E402

CSV_DIR = ROOT.parent / "shared" / "data" / "ohlcv" / "daily"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SYMBOLS = ("AAPL", "MSFT")
CLIENT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 2.0  # DATABASE_CONNECT_TIMEOUT_S of the service under test
COMMAND_TIMEOUT_S = 3.0  # DATABASE_COMMAND_TIMEOUT_S (ignored by checkouts that lack it)
BOUND_S = CONNECT_TIMEOUT_S + COMMAND_TIMEOUT_S  # the most one database wait may take
SCENARIOS = ("expiry", "redis", "database")
# issue 14's adversarial scenarios (bench/adversarial.py): the cached price beside abuse
ADVERSARIAL = (
    "idle",
    "optimize_422",
    "optimize_cscv",
    "chart",
    "results_list",
    "monte_carlo",
    "predict_range",
)
RAMP_S = 1.0  # clients connect spread over a second (not one SYN burst), before the run
WARM_URL = "/market/market_status"  # each client's first request (no cache entry under test)
SERVER_CMD = {  # `--server uvicorn`: the same app under plain uvicorn (to tell server from app)
    "trading": [sys.executable, "-m", "trading.cli", "serve"],
    "uvicorn": [sys.executable, "-m", "uvicorn", "--factory", "trading.host:build_platform_app"],
}
SERVER = "trading"


def paths() -> list[str]:
    """Return the URLs the clients cycle through (cached price, indicators, latest RSI)."""
    out = []
    for s in SYMBOLS:
        out += [f"/market/price/{s}", f"/market/indicators/{s}", f"/market/rsi/{s}"]
    return out


# ------------------------------------------------------------------------------ HTTP client
class Conn:
    """One keep-alive HTTP/1.1 connection (GET only, Content-Length bodies)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """Send GET path; return the status (the body is read and dropped).

        Like any HTTP client, a request on a reused keep-alive connection that the server
        had closed meanwhile (idle timeout) is sent again once on a new connection.
        """
        reused = self.writer is not None
        try:
            return await self._get(path)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise
            self.close()
            return await self._get(path)

    async def _get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Sample:
    start: float  # seconds since the load started
    latency: float
    outcome: str  # HTTP status as text, "timeout" or "error"
    path: str


def cold_path(rng: random.Random) -> str:
    """Return a history window nobody asked before (it needs the database)."""
    end = date(2016, 1, 4) + timedelta(days=rng.randrange(700))
    return f"/market/historical/{rng.choice(SYMBOLS)}?start=2014-01-02&end={end}"


@dataclass
class Start:
    """Clients connect and warm up first; the measured run begins when `go` is set."""

    go: asyncio.Event
    connected: list[float]  # when each client's warm-up request was answered
    t0: float = 0.0
    until: float = 0.0


async def client(
    port: int,
    index: int,
    urls: list[str],
    start: Start,
    out: list[Sample],
    *,
    clients: int,
    cold_every: int = 0,
) -> None:
    """Connect (spread over RAMP_S) and send one warm-up request; once `go` is set, request
    urls round-robin until `until`, every cold_every-th request an uncached window instead;
    record every request."""
    await asyncio.sleep(RAMP_S * index / clients)
    conn = Conn(port)
    async with asyncio.timeout(120):
        status = await conn.get(WARM_URL)
    if status != 200:
        raise RuntimeError(f"warm-up answered {status}")
    start.connected.append(time.monotonic())
    await start.go.wait()
    rng = random.Random(index)
    i = index
    while time.monotonic() < start.until:
        path = urls[i % len(urls)]
        if cold_every and i % cold_every == 0:
            path = cold_path(rng)
        i += 1
        began = time.monotonic()
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                outcome = str(await conn.get(path))
        except TimeoutError:
            outcome = "timeout"
            conn.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            outcome = "error"
            conn.close()
            await asyncio.sleep(0.05)
        out.append(Sample(began - start.t0, time.monotonic() - began, outcome, path.split("?")[0]))
    conn.close()


# ---------------------------------------------------------------------------- the server
@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def lines(self, *needles: str) -> int:
        """Count server log lines containing every needle."""
        text = self.log.read_text(errors="replace")
        return sum(all(n in line for n in needles) for line in text.splitlines())

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(root: Path, db_url: str, redis_port: int, tmp: Path) -> Server:
    """Start `trading serve` from root on a free port; wait for /market/health = 200."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MARKET_", "DATABASE_"))},
        "PYTHONPATH": str(root),
        "DATABASE_URL": db_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PRICE_TTL_S": "15",
        "INDICATOR_TTL_S": "10",
        "MARKET_PROVIDERS": "csv",
        "MARKET_DATA_DIR": str(CSV_DIR),
        "DATA_DIR": str(tmp),
        "LOG_LEVEL": "WARNING",
        "DATABASE_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        "DATABASE_COMMAND_TIMEOUT_S": str(COMMAND_TIMEOUT_S),
        "RATE_LIMIT_PER_MINUTE": "0",  # 500 clients share one address: measure the cache
    }
    log = tmp / f"server-{port}.log"
    proc = subprocess.Popen(
        SERVER_CMD[SERVER] + ["--port", str(port)],
        cwd=root,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(root, port, proc, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
            if asyncio.run(Conn(port).get("/market/health")) == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError("server did not become healthy")


# ---------------------------------------------------------------------------- scenarios
async def admin(sql: str) -> None:
    """Run one statement on the PostgreSQL server as the admin user."""
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def csv_closes(symbol: str) -> pd.Series:
    """Return the closes of symbol's CSV file, indexed by ISO date."""
    frame = pd.read_csv(CSV_DIR / f"{symbol}.csv", dtype={"date": str})
    return pd.Series(frame["close"].to_numpy(), index=frame["date"])


async def check_rows(dsn: str) -> dict[str, int]:
    """Return rows lost (inside recorded coverage or the CSV's last 5), duplicated, changed."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        dup = await conn.fetchval(
            "select count(*) from (select 1 from market_data group by symbol, timestamp "
            "having count(*) > 1) d"
        )
        lost = changed = 0
        for symbol in SYMBOLS:
            closes = csv_closes(symbol)
            rows = await conn.fetch(
                "select timestamp, close from market_data where symbol = $1", symbol
            )
            stored = {r["timestamp"].date().isoformat(): r["close"] for r in rows}
            changed += sum(1 for d, c in stored.items() if d in closes.index and closes[d] != c)
            expect: set[str] = set(closes.index[-5:]) if stored else set()
            for r in await conn.fetch(
                "select start_date, end_date from market_data_coverage where symbol = $1", symbol
            ):
                lo, hi = r["start_date"].date().isoformat(), r["end_date"].date().isoformat()
                expect.update(d for d in closes.index if lo <= d <= hi)
            lost += len(expect - set(stored))
        return {"lost": lost, "duplicated": int(dup), "changed": changed, "rows": len(stored)}
    finally:
        await conn.close()


@dataclass
class Result:
    label: str
    samples: list[Sample]
    duration: float
    rows: dict[str, int]
    logs: dict[str, int]
    steady: tuple[float, float] = (0.5, 9.0)  # the first expiry is 10 s after priming
    fault: tuple[float, float] | None = None
    connect_s: float = 0.0
    notes: list[str] = field(default_factory=list)


async def run_load(
    port: int,
    clients: int,
    duration: float,
    events: list[tuple[float, object]],
    cold_every: int = 0,
) -> tuple[list[Sample], float, float]:
    """Connect every client, prime the cache, then run duration seconds with the events
    (offset, callable) fired on time; return samples, run time and connection time."""
    urls = paths()
    out: list[Sample] = []
    start = Start(asyncio.Event(), [])
    began = time.monotonic()
    tasks = [
        asyncio.create_task(
            client(port, i, urls, start, out, clients=clients, cold_every=cold_every)
        )
        for i in range(clients)
    ]
    while len(start.connected) < clients:  # every client connected and answered once
        await asyncio.sleep(0.05)
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise RuntimeError("a client could not connect") from t.exception()
    connect_s = max(start.connected) - began
    primer = Conn(port)
    for symbol in SYMBOLS if cold_every else ():  # cold windows read stored bars, not CSV
        status = await primer.get(f"/market/historical/{symbol}?start=2014-01-02&end=2018-01-31")
        if status != 200:
            raise RuntimeError(f"storing the cold range of {symbol} answered {status}")
    for path in urls:  # prime every cache entry once: its TTL starts now
        status = await primer.get(path)
        if status != 200:
            raise RuntimeError(f"priming {path} answered {status}")
    primer.close()
    start.t0 = time.monotonic()
    start.until = start.t0 + duration

    async def fire() -> None:
        for offset, action in events:
            await asyncio.sleep(max(0.0, start.t0 + offset - time.monotonic()))
            await asyncio.to_thread(action)  # type: ignore[arg-type]

    timer = asyncio.create_task(fire())
    start.go.set()
    await asyncio.gather(*tasks)
    await timer
    return out, time.monotonic() - start.t0, connect_s


def scenario(
    root: Path, name: str, clients: int, duration: float, keep: Path | None = None
) -> Result:
    """Run one scenario against a fresh server, database and redis-server."""
    db = f"bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    pg_port = int(PG_ADMIN.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = Proxy(pg_port)
    redis = RedisServer()
    redis.start()
    server: Server | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{db}"
        server = start_server(root, url, redis.port, tmp)
        third = duration / 3
        events: list[tuple[float, object]] = []
        fault = None
        if name == "redis":
            events = [(third, redis.kill), (2 * third, redis.start)]
        elif name == "database":
            events = [
                (9.0, lambda: proxy.set("refuse")),
                (15.0, lambda: proxy.set("drop")),
                (27.0, lambda: proxy.set("forward")),
            ]
            fault = (9.0, 27.0)
        cold_every = 10 if name == "database" else 0
        samples, took, connect_s = asyncio.run(
            run_load(server.port, clients, duration, events, cold_every)
        )
        time.sleep(1.0)
        logs = {
            "unavailable": server.lines("shared.cache: Redis", "unavailable"),
            "back": server.lines("shared.cache: Redis", "is back")
            - server.lines("shared.cache: Redis", "unavailable"),
            "503": server.lines("503 database_unavailable"),
            "tracebacks": server.lines("Traceback"),
        }
        server.stop()
        server = None
        rows = asyncio.run(check_rows(f"{base}/{db}"))
        return Result(
            f"{root.name}:{name}", samples, took, rows, logs, fault=fault, connect_s=connect_s
        )
    finally:
        if server is not None:
            server.stop()
        redis.kill()
        proxy.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("server-*.log"):
                shutil.copy(log, keep / f"{root.name}-{name}.log")
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ report
def summarize(r: Result) -> dict[str, str]:
    """Return the printed figures of one scenario."""
    lat = np.array([s.latency for s in r.samples]) * 1000
    starts = np.array([s.start for s in r.samples])
    outcomes = [s.outcome for s in r.samples]
    ok = np.array([o == "200" for o in outcomes])
    five03 = sum(o == "503" for o in outcomes)
    timeouts = sum(o == "timeout" for o in outcomes)
    allowed = {"200", "503"} if r.fault else {"200"}
    errors = sum(o not in allowed and o != "timeout" for o in outcomes)
    steady = lat[(starts >= r.steady[0]) & (starts < r.steady[1])]
    after = lat[starts >= r.steady[1]]
    p99_steady = float(np.percentile(steady, 99)) if len(steady) else float("nan")
    max_after = float(after.max()) if len(after) else float("nan")
    out = {
        "clients connected in s": f"{r.connect_s:.1f}",
        "requests": f"{len(lat)}",
        "throughput/s": f"{len(lat) / r.duration:.0f}",
        "p50 ms": f"{np.percentile(lat, 50):.0f}",
        "p99 ms": f"{np.percentile(lat, 99):.0f}",
        "max ms": f"{lat.max():.0f}",
        "errors": f"{errors}",
        "timeouts (30 s)": f"{timeouts}",
        "503 answers": f"{five03}",
        "200 answers": f"{int(ok.sum())}",
        "steady p99 ms": f"{p99_steady:.0f}",
        "max after 1st expiry": f"{max_after:.0f} ({max_after / p99_steady:.1f}x)",
    }
    if r.fault:
        during = lat[(starts >= r.fault[0]) & (starts < r.fault[1])] / 1000
        out["fault: max s"] = f"{during.max():.1f} (bound {BOUND_S:g})" if len(during) else "-"
        out["fault: over bound"] = f"{int((during > BOUND_S).sum())}/{len(during)}"
    else:
        out["fault: max s"] = out["fault: over bound"] = "-"
    out["log: Redis unavailable"] = str(r.logs["unavailable"])
    out["log: Redis back"] = str(r.logs["back"])
    out["log: 503 database"] = str(r.logs["503"])
    out["log tracebacks"] = str(r.logs["tracebacks"])
    out["rows lost/dup/changed"] = f"{r.rows['lost']}/{r.rows['duplicated']}/{r.rows['changed']}"
    return out


def print_table(results: list[Result]) -> None:
    """Print one column per scenario."""
    cols = [summarize(r) for r in results]
    width = max(22, *(len(r.label) + 2 for r in results))
    print(f"{'':<24}" + "".join(f"{r.label:>{width}}" for r in results))
    for key in cols[0]:
        print(f"{key:<24}" + "".join(f"{c[key]:>{width}}" for c in cols))


def main() -> None:
    """Run the scenarios for every root and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", type=Path, help="checkout(s) to serve")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--duration", type=float, default=36.0, help="seconds per scenario")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS + ADVERSARIAL,
        help="the adversarial ones (bench/adversarial.py) run apart, 10 s each",
    )
    parser.add_argument(
        "--samples", type=Path, help="write each scenario's requests (CSV) and server log here"
    )
    parser.add_argument("--server", choices=sorted(SERVER_CMD), default="trading")
    args = parser.parse_args()
    global SERVER
    SERVER = args.server
    roots = [r.resolve() for r in (args.root or [ROOT])]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    adversarial = [n for n in args.scenario or () if n in ADVERSARIAL]
    if adversarial:
        from bench import adversarial as attacks

        for root in roots:
            attacks.main(adversarial, root)
        if all(n in ADVERSARIAL for n in args.scenario):
            return
    results = []
    for root in roots:
        for name in [n for n in args.scenario or SCENARIOS if n not in ADVERSARIAL]:
            print(f"running {name} against {root} ...", file=sys.stderr, flush=True)
            results.append(scenario(root, name, args.clients, args.duration, args.samples))
            if args.samples:
                args.samples.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([vars(s) for s in results[-1].samples]).to_csv(
                    args.samples / f"{results[-1].label.replace(':', '-')}.csv", index=False
                )
    print(
        f"\n{args.clients} clients, {args.duration:g} s per scenario, client timeout "
        f"{CLIENT_TIMEOUT_S:g} s; TTLs: price 15 s, indicators 10 s; database bound "
        f"{BOUND_S:g} s (connect {CONNECT_TIMEOUT_S:g} + command {COMMAND_TIMEOUT_S:g})"
    )
    print_table(results)


if __name__ == "__main__":
    main()
