"""Market-service benchmark: HTTP latency of cached endpoints and indicator kernels vs TA-Lib.

Run: `make bench` (or `.venv/bin/python bench/market.py`). Prints, in one run:
- p50/p99 of cached `GET /price/AAPL` and `GET /indicators/AAPL` (10 years daily, all five
  indicators) through real HTTP (uvicorn on 127.0.0.1), both as the client sees it and as the
  server measures it (`Server-Timing`);
- indicator kernel time against TA-Lib on 2,520 and 1,000,000 bars.
Targets: cached price p50 under 2 ms at the server; kernels within 1.5x of TA-Lib on 1M bars.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.indicators_kernels import format_table, run_kernel_bench
from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from trading.cli import free_port, serve_in_thread


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) of values."""
    return float(np.percentile(np.asarray(values), q))


def time_endpoint(http: httpx.Client, path: str, params: dict, n: int) -> dict[str, float]:
    """Call path n times after one warm-up call; return client and server p50/p99 in ms."""
    first = http.get(path, params=params)
    first.raise_for_status()
    client_ms, server_ms = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        r = http.get(path, params=params)
        client_ms.append((time.perf_counter() - t0) * 1000)
        server_ms.append(float(r.headers["server-timing"].split("dur=")[1]))
    return {
        "client_p50": percentile(client_ms, 50),
        "client_p99": percentile(client_ms, 99),
        "server_p50": percentile(server_ms, 50),
        "server_p99": percentile(server_ms, 99),
        "bytes": len(first.content),
    }


def http_bench(n: int) -> list[tuple[str, dict[str, float]]]:
    """Run the HTTP latency benchmark on an embedded-mode service."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = MarketSettings(
            data_dir=Path(tmp),
            market_data_dir=SHARED_CSV_DIR,
            market_providers=["csv"],
            redis_url=None,
        )
        with (
            serve_in_thread(create_app(settings), free_port()) as url,
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            return [
                ("GET /price/AAPL (cached)", time_endpoint(http, "/price/AAPL", {}, n)),
                (
                    "GET /indicators/AAPL 10y x5 (cached)",
                    time_endpoint(
                        http,
                        "/indicators/AAPL",
                        {"start": "2013-10-28", "end": "2023-10-27"},
                        max(50, n // 5),
                    ),
                ),
            ]


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per endpoint")
    args = parser.parse_args()

    print("== HTTP latency, embedded mode (SQLite, in-process cache), uvicorn on loopback ==")
    print(f"{'endpoint':<40}{'client p50':>11}{'p99':>9}{'server p50':>12}{'p99':>9}{'bytes':>10}")
    for name, r in http_bench(args.n):
        print(
            f"{name:<40}{r['client_p50']:>9.3f}ms{r['client_p99']:>7.3f}ms"
            f"{r['server_p50']:>10.3f}ms{r['server_p99']:>7.3f}ms{int(r['bytes']):>10}"
        )
    print("target: cached price p50 < 2 ms at the server\n")

    print("== Indicator kernels (numba, via the service's compute()) vs TA-Lib, medians ==")
    print(format_table(run_kernel_bench()))
    print("target: ratio <= 1.5 on 1,000,000 bars")


if __name__ == "__main__":
    main()
