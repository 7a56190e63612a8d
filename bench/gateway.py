"""Gateway overhead: a tool call through the MCP gateway vs the direct call of the same operation.

Run: `.venv/bin/python bench/gateway.py [-n 500]`. Embedded mode (the market app inside the
gateway process, SQLite in a temporary folder, in-process cache), cached `AAPL` quote:

- in-process: `fastmcp.Client(gateway).call_tool("market_get_price", {"symbol": "AAPL"})`
  against `GET /price/AAPL` on the same app instance through httpx's ASGI transport;
- real HTTP (loopback, each server in its own process as deployed): an MCP streamable-HTTP
  tool call to `trading mcp --http` against `GET /price/AAPL` on the market service alone
  (`uvicorn --factory services.market.app:create_app`), once as bare JSON-RPC POSTs (the
  gateway's cost) and once through fastmcp's streamable-HTTP client (client cost included).

Each side is warmed up, then timed n times, alternating the two so that noise on the shared
cores hits both alike. Prints medians, p90 and the added median latency.
Target: under 2 ms added in-process (embedded mode).

Claude Desktop's view (`--claude-only` runs just this): the official `mcp` client starts
`trading mcp` over stdio as Claude Desktop does and reports the seconds from spawn to the
`initialize` answer and to the first tool answer, the model-visible tool context (name +
description + input schema of `tools/list`, target <= 32 kB) beside the whole `tools/list`,
and the size of a typical backtest answer (target <= 4 kB). Then the prediction figures of
issue 13 (bench/predictor_service.py, the same code as `bench/predictor.py --only process`): a
small model trained through `trading serve` in a job worker, the first `/predict` of that
server and its RSS, the process tree once the worker has gone idle, and a fresh `trading mcp`
whose first call is `predictor_predict` (targets: that call < 2 s, gateway RSS < 700 MB, the
tree < 900 MB after training). `--no-predict` skips them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_LOG_LEVEL", "WARNING")

import httpx
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR, MarketSettings
from trading.cli import free_port

Call = Callable[[], Awaitable[Any]]


async def time_pair(direct: Call, gateway: Call, n: int, warmup: int) -> dict[str, list[float]]:
    """Warm both up, then time n calls of each, alternating; return milliseconds."""
    for _ in range(warmup):
        await direct()
        await gateway()
    out: dict[str, list[float]] = {"direct": [], "gateway": []}
    for _ in range(n):
        for name, call in (("direct", direct), ("gateway", gateway)):
            t0 = time.perf_counter()
            await call()
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def summary(label: str, ms: dict[str, list[float]]) -> str:
    """Return one table row: medians, p90s and the added median latency."""

    def p90(v: list[float]) -> float:
        return statistics.quantiles(v, n=10)[-1]

    d, g = statistics.median(ms["direct"]), statistics.median(ms["gateway"])
    return (
        f"{label:<14}{d:>12.3f}{p90(ms['direct']):>10.3f}{g:>13.3f}{p90(ms['gateway']):>10.3f}"
        f"{g - d:>12.3f}"
    )


@contextmanager
def subprocess_server(argv: list[str], port: int, data_dir: Path) -> Iterator[str]:
    """Start a server process on loopback (CSV data, state in data_dir); yield its base URL."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "API_TOKEN"))},
        "MARKET_PROVIDERS": "csv",
        "MARKET_DATA_DIR": str(SHARED_CSV_DIR),
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not listen on {port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def in_process(gateway: Any, app: Any, n: int, warmup: int) -> dict[str, list[float]]:
    """Time the in-process tool call against the in-process ASGI call."""
    async with (
        Client(gateway) as mcp,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://market") as rest,
    ):

        async def direct() -> None:
            (await rest.get("/price/AAPL")).raise_for_status()

        async def tool() -> None:
            result = await mcp.call_tool("market_get_price", {"symbol": "AAPL"})
            assert result.structured_content["symbol"] == "AAPL"

        return await time_pair(direct, tool, n, warmup)


async def over_http(
    mcp_url: str, rest_url: str, n: int, warmup: int
) -> list[tuple[str, dict[str, list[float]]]]:
    """Time MCP tool calls over streamable HTTP against the REST call over HTTP.

    Two MCP clients: bare JSON-RPC POSTs on an initialised session (the gateway's own cost),
    and fastmcp's streamable-HTTP client (what a Python agent would pay, client included).
    """
    headers = {"Accept": "application/json, text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=rest_url) as rest,
        httpx.AsyncClient(base_url=mcp_url, headers=headers) as raw,
        Client(StreamableHttpTransport(f"{mcp_url}/mcp")) as mcp,
    ):
        init = await raw.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                },
            },
        )
        raw.headers["mcp-session-id"] = init.headers["mcp-session-id"]
        raw.headers["mcp-protocol-version"] = "2025-06-18"
        await raw.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "market_get_price", "arguments": {"symbol": "AAPL"}},
        }

        async def direct() -> None:
            (await rest.get("/price/AAPL")).raise_for_status()

        async def bare() -> None:
            answer = await raw.post("/mcp", json=call)
            assert answer.status_code == 200 and '"AAPL"' in answer.text

        async def sdk() -> None:
            await mcp.call_tool("market_get_price", {"symbol": "AAPL"})

        return [
            ("HTTP bare", await time_pair(direct, bare, n, warmup)),
            ("HTTP fastmcp", await time_pair(direct, sdk, n, warmup)),
        ]


def claude_figures(data_dir: Path) -> dict[str, Any]:
    """Start `trading mcp` over stdio as Claude Desktop does; return its cold start and sizes."""
    from mcp import StdioServerParameters

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env.update(MARKET_PROVIDERS="csv", MARKET_DATA_DIR=str(SHARED_CSV_DIR), DATA_DIR=str(data_dir))
    trading = Path(sys.executable).absolute().parent / "trading"
    params = StdioServerParameters(command=str(trading), args=["mcp"], env=env, cwd=str(data_dir))
    with (data_dir / "stderr.log").open("w") as errlog:
        return asyncio.run(_claude_session(params, errlog))


async def _claude_session(params: Any, errlog: Any) -> dict[str, Any]:
    import json

    from mcp import ClientSession
    from mcp.client.stdio import stdio_client

    from gateway_mcp.context import model_visible_bytes

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write, read_timeout_seconds=60.0) as session,
    ):
        init = await session.initialize()
        out["initialize_s"] = time.perf_counter() - t0
        await session.call_tool("market_get_price", {"symbol": "AAPL"})
        out["first_answer_s"] = time.perf_counter() - t0
        listed = await session.list_tools()
        out["server"] = f"{init.server_info.name} {init.server_info.version}"
        out["tools"] = len(listed.tools)
        out["context_bytes"] = sum(
            model_visible_bytes(t.name, t.description, t.input_schema) for t in listed.tools
        )
        out["tools_list_bytes"] = len(listed.model_dump_json(by_alias=True).encode())
        run = await session.call_tool(
            "backtest_run_backtest",
            {
                "symbol": "AAPL",
                "start_date": "2019-01-02",
                "end_date": "2023-10-27",
                "strategy": {"name": "sma_crossover"},
            },
        )
        out["backtest_answer_bytes"] = len(
            json.dumps(run.structured_content, separators=(",", ":")).encode()
        )
    return out


def print_claude(figures: dict[str, Any]) -> None:
    """Print Claude Desktop's view of the gateway."""
    ctx = figures["context_bytes"]
    print(f"Claude Desktop's view (stdio, {figures['server']}, {figures['tools']} tools)")
    print(
        f"  cold start: initialize {figures['initialize_s']:.2f} s, first tool answer "
        f"{figures['first_answer_s']:.2f} s"
    )
    print(
        f"  tool context (name + description + input schema): {ctx:,} bytes "
        f"({'meets' if ctx <= 32_000 else 'MISSES'} the 32 kB target); whole tools/list "
        f"{figures['tools_list_bytes']:,} bytes"
    )
    size = figures["backtest_answer_bytes"]
    print(
        f"  backtest answer (AAPL 2019-2023, sma_crossover): {size:,} bytes "
        f"({'meets' if size <= 4_000 else 'MISSES'} the 4 kB target)"
    )


def print_prediction_figures(symbol: str = "AAPL") -> None:
    """Train a small model through `trading serve`, then time a fresh gateway predicting."""
    from bench.predictor_service import cold_start_bench, process_bench

    print("First prediction and memory (a small LSTM + XGBoost trained in a job worker)")
    with tempfile.TemporaryDirectory() as tmp:
        lines = process_bench(Path(tmp), symbol, idle_s=10.0, lstm="small", epochs=3)
        lines += cold_start_bench(Path(tmp), symbol)
    for line in lines:
        print(f"  {line}")


def main() -> None:
    """Run both comparisons and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=500, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--no-http", action="store_true", help="skip the real-HTTP comparison")
    parser.add_argument(
        "--claude-only", action="store_true", help="only Claude Desktop's view (stdio)"
    )
    parser.add_argument(
        "--no-predict", action="store_true", help="skip the first-prediction and RSS figures"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("httpx", "httpx2", "alembic", "shared", "gateway_mcp", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        print_claude(claude_figures(Path(tmp)))
    if not args.no_predict:
        print_prediction_figures()
    if args.claude_only:
        return

    with tempfile.TemporaryDirectory() as tmp:
        market = create_app(
            MarketSettings(
                data_dir=Path(tmp),
                market_data_dir=SHARED_CSV_DIR,
                market_providers=["csv"],
                redis_url=None,
            )
        )
        settings = GatewaySettings(mode="embedded")
        gateway = build_gateway(settings, app_factories={"market": lambda: market})
        rows = [("in-process", asyncio.run(in_process(gateway, market, args.n, args.warmup)))]
        if not args.no_http:
            # Two processes, as deployed: `trading mcp --http` (market embedded) and the
            # market service alone under uvicorn; the client runs in this process.
            bin_dir = Path(sys.executable).absolute().parent
            gw_port, rest_port = free_port(), free_port()
            with (
                subprocess_server(
                    [str(bin_dir / "trading"), "mcp", "--http", "--port", str(gw_port)],
                    gw_port,
                    Path(tmp) / "gateway",
                ) as mcp_url,
                subprocess_server(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "services.market.app:create_app",
                        "--port",
                        str(rest_port),
                        "--log-level",
                        "warning",
                    ],
                    rest_port,
                    Path(tmp) / "rest",
                ) as rest_url,
            ):
                rows += asyncio.run(over_http(mcp_url, rest_url, args.n, args.warmup))

    print(f"market_get_price(AAPL), cached, embedded mode; n={args.n} per side, times in ms")
    print(f"{'':<14}{'direct p50':>12}{'p90':>10}{'gateway p50':>13}{'p90':>10}{'added p50':>12}")
    for label, ms in rows:
        print(summary(label, ms))
    added = statistics.median(rows[0][1]["gateway"]) - statistics.median(rows[0][1]["direct"])
    verdict = "meets" if added < 2.0 else "MISSES"
    print(f"in-process added latency {added:.3f} ms: {verdict} the 2 ms target")


if __name__ == "__main__":
    main()
