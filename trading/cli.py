"""`trading`: the project's one command-line interface."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import typer

app = typer.Typer(help="AI trading research platform.", no_args_is_help=True, add_completion=False)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(asgi_app: Any, port: int) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(
        asgi_app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server failed to start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(
        1, min=1, help="Worker processes (each runs every service; metrics are shared)."
    ),
    header_timeout: float | None = typer.Option(
        None, help="Seconds for a request's line and headers (default HTTP_HEADER_TIMEOUT_S)."
    ),
    body_timeout: float | None = typer.Option(
        None, help="Seconds for a request body (default HTTP_BODY_TIMEOUT_S)."
    ),
    keep_alive: int | None = typer.Option(
        None, help="Seconds an idle keep-alive connection stays open (default HTTP_KEEP_ALIVE_S)."
    ),
) -> None:
    """Serve every service over HTTP (Swagger UI at /market/docs), with the server limits.

    Slow request heads and bodies are cut (408 / closed) and idle keep-alive connections
    closed, per the HTTP_* settings or these options. With --workers N the processes share
    one /metrics exposition through a PROMETHEUS_MULTIPROC_DIR (a temporary folder unless
    set), and rate limits are shared only through Redis.
    """
    import tempfile

    import uvicorn

    from shared.config import BaseServiceSettings
    from shared.logging import configure_logging
    from shared.server import PROTOCOL_PATH

    # Options become settings through the environment, which every worker process inherits.
    for name, value in (
        ("HTTP_HEADER_TIMEOUT_S", header_timeout),
        ("HTTP_BODY_TIMEOUT_S", body_timeout),
        ("HTTP_KEEP_ALIVE_S", keep_alive),
    ):
        if value is not None:
            os.environ[name] = str(value)
    settings = BaseServiceSettings()
    configure_logging(settings.log_level)
    multiproc: tempfile.TemporaryDirectory[str] | None = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiproc = tempfile.TemporaryDirectory(prefix="trading-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc.name
    try:
        uvicorn.run(
            "trading.host:build_platform_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=PROTOCOL_PATH,
            timeout_keep_alive=settings.http_keep_alive_s,
            log_config=None,
        )
    finally:
        if multiproc is not None:
            multiproc.cleanup()


@app.command()
def demo(
    symbols: str = typer.Option("AAPL,MSFT,NVDA,^GSPC", help="Comma-separated tickers."),
    ml: bool = typer.Option(True, "--ml/--no-ml", help="Also train a small model and predict."),
) -> None:
    """Start every service; query prices and indicators, run a backtest, train and predict,
    all via HTTP."""
    import httpx

    from services.market.settings import MarketSettings
    from shared.logging import configure_logging
    from trading.host import build_platform_app

    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the apps log at LOG_LEVEL: keep it quiet
    configure_logging("WARNING")
    settings = MarketSettings()
    typer.echo(f"database : {settings.resolved_database_url()}")
    typer.echo(
        f"cache    : {'Redis ' + settings.redis_url if settings.redis_url else 'in-process'}"
    )
    typer.echo(
        f"providers: {', '.join(settings.provider_order())} "
        f"(CSV folder: {settings.market_data_dir})"
    )
    with (
        serve_in_thread(build_platform_app(), free_port()) as root,
        httpx.Client(base_url=f"{root}/market", timeout=60) as http,
        httpx.Client(base_url=f"{root}/backtest", timeout=120) as backtests,
        httpx.Client(base_url=f"{root}/predictor", timeout=120) as predictor,
    ):
        typer.echo(
            f"services : {root}  (OpenAPI at {root}/market/docs, {root}/backtest/docs, "
            f"{root}/predictor/docs)\n"
        )
        status = http.get("/market_status").json()
        typer.echo(
            f"NYSE now: {'OPEN' if status['is_open'] else 'closed'}; next open "
            f"{status['next_open']}; next holidays {status['upcoming_holidays'][:3]}\n"
        )
        header = (
            f"{'symbol':<8}{'as of':<12}{'close':>11}{'chg %':>8}{'RSI14':>8}"
            f"{'MACD':>10}{'signal':>10}{'%R14':>8}  served from"
        )
        typer.echo(header)
        typer.echo("-" * len(header))
        for symbol in [s.strip() for s in symbols.split(",") if s.strip()]:
            t0 = time.perf_counter()
            price = http.get(f"/price/{symbol}")
            if price.status_code != 200:
                typer.echo(f"{symbol:<8}{price.json()['detail']}")
                continue
            p = price.json()
            rsi = http.get(f"/rsi/{symbol}").json()["values"]["rsi"]
            macd = http.get(f"/macd/{symbol}").json()["values"]
            wr = http.get(f"/williams_r/{symbol}").json()["values"]["williams_r"]
            ms = (time.perf_counter() - t0) * 1000
            typer.echo(
                f"{p['symbol']:<8}{p['timestamp'][:10]:<12}{p['price']:>11.2f}"
                f"{p['change_percent'] or 0:>8.2f}{rsi:>8.2f}{macd['macd']:>10.3f}"
                f"{macd['macd_signal']:>10.3f}{wr:>8.1f}  {p['cache_level']} ({ms:.0f} ms)"
                + (f"  stale: {p['age_sessions']} sessions old" if p.get("stale") else "")
            )
        first = symbols.split(",")[0].strip()
        hist = http.get(f"/historical/{first}", params={"start": "2020-01-01"}).json()
        q = hist["metadata"]["quality"]
        typer.echo(
            f"\n{first} since 2020-01-01: {len(hist['bars'])} bars from "
            f"{hist['metadata']['source']}; quality: {q['rejected_count']} rejected, "
            f"{q['outlier_count']} return outliers "
            f"(>3 sd), {q['missing_sessions']} missing sessions"
        )
        for note in hist.get("notes", []):
            typer.echo(f"  note: {note}")
        again = http.get(f"/historical/{first}", params={"start": "2020-01-01"}).json()
        typer.echo(f"same request again: served from {again['metadata']['cache_level']}")
        _demo_backtest(backtests, first, hist["end"], settings.data_dir)
        with httpx.Client(base_url=f"{root}/portfolio", timeout=120) as portfolio:
            _demo_paper(portfolio, backtests, first, hist["end"])
        if ml:
            from services.predictor.demo import run_demo

            typer.echo("\npredictor: a small LSTM + XGBoost ensemble, trained as a job over HTTP")
            run_demo(predictor, symbol=first, echo=typer.echo)


def _demo_paper(portfolio: Any, backtests: Any, symbol: str, end: str) -> None:
    """Replay a paper deployment over the last year of symbol beside the same backtest."""
    last = date.fromisoformat(end[:10])
    start = (last - timedelta(days=365 + 90)).isoformat()  # 60 warm-up bars before the year
    strategy = {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}}
    costs = {"commission_rate": 0.001, "slippage": 0.0005}
    account = portfolio.post("/accounts", json={"name": "demo", "initial_cash": 100_000})
    if account.status_code != 201:
        typer.echo(f"\npaper: {account.json().get('detail', account.text)}")
        return
    dep = portfolio.post(
        "/deployments",
        json={
            "account_id": account.json()["id"],
            "strategy": strategy,
            "symbols": [symbol],
            "start_date": start,
            "costs": costs,
        },
    ).json()
    run = portfolio.post(f"/deployments/{dep['id']}/run", json={"until": last.isoformat()})
    if run.status_code != 200:
        typer.echo(f"\npaper: {run.json().get('detail', run.text)}")
        return
    r = run.json()
    book = portfolio.get(f"/accounts/{dep['account_id']}").json()
    drift = portfolio.get(f"/deployments/{dep['id']}/drift").json()
    bt = backtests.get(f"/results/{drift['run_id']}").json()
    typer.echo(
        f"\npaper    : SMA 10/30 deployed on {symbol} from {start} (60 warm-up bars), replayed "
        f"to {r['last_session']}: {r['sessions']} sessions, {r['fills']} fills, "
        f"{r['refused']} refused by the risk manager"
    )
    typer.echo(
        f"           equity {book['equity']:,.2f} (cash {book['cash']:,.2f}, "
        f"{len(book['positions'])} position(s)) beside the backtest's final capital "
        f"{bt['metrics']['final_capital']:,.2f}; {drift['fills_differing']} of "
        f"{drift['fills_compared']} fills differ, tracking error {drift['tracking_error']:.4f}"
    )


def _demo_backtest(http: Any, symbol: str, end: str, data_dir: Path) -> None:
    """Run one ten-year backtest through the backtest service; print it beside buy-and-hold."""
    last = date.fromisoformat(end[:10])
    config = {
        "symbol": symbol,
        "start_date": last.replace(year=last.year - 10).isoformat(),
        "end_date": last.isoformat(),
        "initial_capital": 100_000,
        "strategy": {"name": "sma_crossover", "params": {"fast": 20, "slow": 50}},
        "commission_rate": 0.001,
        "slippage": 0.0005,
        "warmup_period": 50,
    }
    t0 = time.perf_counter()
    answer = http.post("/backtest", json=config)
    ms = (time.perf_counter() - t0) * 1000
    if answer.status_code != 200:
        typer.echo(f"\nbacktest failed: {answer.json().get('detail', answer.text)}")
        return
    run = answer.json()
    m, b, t = run["metrics"], run["benchmark"], run["trades"]
    typer.echo(
        f"\nbacktest : SMA 20/50 crossover, long only, on {symbol} {run['start']} .. "
        f"{run['end']} ({run['bars']} bars), 0.1% commission, 0.05% slippage, next-open "
        f"fills; run {run['run_id']} ({ms:.0f} ms over HTTP)"
    )

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    rows = [
        ("final capital", f"{m['final_capital']:,.0f}", f"{b['final_capital']:,.0f}"),
        ("total return", pct(m["total_return"]), pct(b["total_return"])),
        ("CAGR", pct(m["cagr"]), pct(b["cagr"])),
        ("volatility (annual)", pct(m["annualized_volatility"]), pct(b["annualized_volatility"])),
        ("Sharpe", num(m["sharpe_ratio"]), num(b["sharpe_ratio"])),
        ("Sortino", num(m["sortino_ratio"]), num(b["sortino_ratio"])),
        ("max drawdown", pct(m["max_drawdown"]), pct(b["max_drawdown"])),
    ]
    typer.echo(f"{'':<22}{'strategy':>12}{'buy & hold':>14}")
    for label, mine, theirs in rows:
        typer.echo(f"{label:<22}{mine:>12}{theirs:>14}")
    typer.echo(
        f"trades: {t['round_trips']} round trips, win rate {pct(m['win_rate'])}, profit factor "
        f"{num(m['profit_factor'])}, exposure {pct(m['exposure'])}; alpha {pct(m['alpha'])}, "
        f"beta {num(m['beta'])}; p-value of the mean daily return {num(m['p_value'])}, "
        f"probabilistic Sharpe {num(m['probabilistic_sharpe_ratio'])}"
    )
    chart = http.get(f"/results/{run['run_id']}/chart.png")
    path = Path(data_dir) / "charts" / f"backtest-{run['run_id']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chart.content)
    typer.echo(f"chart    : {path}")


class _ProtocolOnlyStdout:
    """sys.stdout while serving MCP over stdio: `.buffer` is the protocol pipe, text is not.

    The MCP stdio transport writes its messages to `sys.stdout.buffer`; a stray `print()`
    (text written to `sys.stdout`) goes to stderr instead of corrupting the protocol.
    """

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, buffer: BinaryIO) -> None:
        self.buffer = buffer

    def write(self, text: str) -> int:
        """Send text to stderr."""
        return sys.stderr.write(text)

    def flush(self) -> None:
        """Flush stderr."""
        sys.stderr.flush()

    def isatty(self) -> bool:
        """Return False: stdout is a protocol pipe."""
        return False


def _reserve_stdout_for_protocol() -> None:
    """Keep the process's stdout for MCP messages only; anything else lands on stderr."""
    sys.stdout.flush()
    wire = os.dup(1)
    os.dup2(2, 1)  # C libraries and child processes writing to fd 1 now reach stderr
    sys.stdout = _ProtocolOnlyStdout(os.fdopen(wire, "wb"))  # type: ignore[assignment]


@app.command("mcp")
def mcp_command(
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP instead of stdio."),
    host: str | None = typer.Option(None, help="HTTP interface (default: GATEWAY_HOST)."),
    port: int | None = typer.Option(None, help="HTTP port (default: GATEWAY_PORT, 8765)."),
    remote: bool = typer.Option(
        False, "--remote", help="Call the services at their URLs (GATEWAY_<NAME>_URL)."
    ),
) -> None:
    """Run the MCP gateway: every service operation as a tool (stdio for Claude Desktop)."""
    # fastmcp reads these when imported: no banner, no update check, ever.
    os.environ["FASTMCP_SHOW_SERVER_BANNER"] = "false"
    os.environ["FASTMCP_CHECK_FOR_UPDATES"] = "off"
    if not http:
        _reserve_stdout_for_protocol()

    import anyio
    import fastmcp

    fastmcp.settings.show_server_banner = False  # in case fastmcp was imported earlier
    fastmcp.settings.check_for_updates = "off"

    from gateway_mcp.server import build_gateway, run_http, run_stdio
    from gateway_mcp.settings import GatewaySettings
    from shared.logging import configure_logging

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if remote:
        overrides["mode"] = "remote"
    settings = GatewaySettings(**overrides)
    configure_logging(settings.log_level)
    gateway = build_gateway(settings)
    if http:
        if settings.http_token() is None and settings.host not in {"127.0.0.1", "localhost", "::1"}:
            typer.echo("warning: no GATEWAY_TOKEN set on a non-loopback interface", err=True)
        anyio.run(run_http, gateway, settings)
    else:
        anyio.run(run_stdio, gateway)


def trading_executable() -> Path:
    """Return the absolute path of this checkout's `trading` script."""
    beside_python = Path(sys.executable).absolute().parent / "trading"
    if beside_python.exists():
        return beside_python
    argv0 = Path(sys.argv[0])
    if argv0.name == "trading" and argv0.exists():
        return argv0.absolute()
    return beside_python


@app.command("claude-config")
def claude_config(
    name: str = typer.Option("trading-platform", help="Server name shown in Claude Desktop."),
) -> None:
    """Print the Claude Desktop config snippet that starts this checkout's MCP gateway."""
    snippet = {"mcpServers": {name: {"command": str(trading_executable()), "args": ["mcp"]}}}
    typer.echo(json.dumps(snippet, indent=2))
    typer.echo(
        "Merge it into claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/,"
        " Windows: %APPDATA%\\Claude\\), then restart Claude Desktop.",
        err=True,
    )


@app.command()
def migrate() -> None:
    """Create or upgrade every service's tables and the platform's (DATABASE_URL, default the
    embedded SQLite)."""
    import asyncio

    from shared.config import BaseServiceSettings
    from shared.db import Database
    from trading.discovery import service_schemas

    async def run() -> str:
        db = Database.from_settings(BaseServiceSettings())
        try:
            await db.migrate(*service_schemas())
        finally:
            await db.dispose()
        return db.safe_url

    typer.echo(f"{asyncio.run(run())} is at the newest schema revision")


@app.command()
def prune() -> None:
    """Delete stored rows past their retention: backtest runs (RETENTION_RUNS_DAYS, default
    0: kept), finished jobs (RETENTION_JOBS_DAYS, 30) and logged predictions
    (RETENTION_PREDICTIONS_DAYS, 90), in DATABASE_URL (default the embedded SQLite)."""
    import asyncio

    from shared.config import BaseServiceSettings
    from shared.db import Database
    from shared.retention import PLATFORM_RULES
    from shared.retention import prune as prune_rows
    from trading.discovery import service_retention, service_schemas

    async def run() -> tuple[str, dict[str, int | None]]:
        settings = BaseServiceSettings()
        db = Database.from_settings(settings)
        rules = [*service_retention(), *PLATFORM_RULES]
        try:
            await db.migrate(*service_schemas())
            return db.safe_url, await prune_rows(db, settings, rules)
        finally:
            await db.dispose()

    url, deleted = asyncio.run(run())
    for kind, count in deleted.items():
        typer.echo(f"{kind}: {'kept (no retention set)' if count is None else f'{count} deleted'}")
    typer.echo(f"pruned {url}")


keys_app = typer.Typer(
    help="Provider and broker API keys, encrypted under DATA_DIR (values are never printed).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _key_store() -> Any:
    from shared.config import BaseServiceSettings
    from shared.keys import KeyStore

    settings = BaseServiceSettings()
    return KeyStore(settings.data_dir, settings.trading_master_key)


def _keys_fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(code=1)


@keys_app.command("set")
def keys_set(
    name: str = typer.Argument(..., help="Key name, e.g. ALPACA_API_KEY."),
    stdin: bool = typer.Option(False, "--stdin", help="Read the value from standard input."),
) -> None:
    """Store a key, encrypted (the value is asked for without echo, or read from stdin)."""
    from pydantic import SecretStr

    from shared.keys import KeyStoreError

    value = (
        sys.stdin.readline().rstrip("\r\n")
        if stdin
        else typer.prompt(f"value of {name}", hide_input=True)
    )
    try:
        _key_store().set(name, SecretStr(value))
    except KeyStoreError as e:
        raise _keys_fail(e) from e
    typer.echo(f"stored {name}")


@keys_app.command("list")
def keys_list() -> None:
    """List stored key names and when each was set (never the values)."""
    from shared.keys import KeyStoreError

    try:
        stored = _key_store().list()
    except KeyStoreError as e:
        raise _keys_fail(e) from e
    for key in stored:
        typer.echo(f"{key.name}\t{key.updated_at}")


@keys_app.command("delete")
def keys_delete(name: str = typer.Argument(..., help="Key name.")) -> None:
    """Delete a stored key."""
    from shared.keys import KeyStoreError

    try:
        deleted = _key_store().delete(name)
    except KeyStoreError as e:
        raise _keys_fail(e) from e
    if not deleted:
        raise _keys_fail(KeyStoreError(f"no key named {name!r}"))
    typer.echo(f"deleted {name}")


@keys_app.command("new-master-key")
def keys_new_master_key() -> None:
    """Print a fresh Fernet master key to put in TRADING_MASTER_KEY (where no keyring exists)."""
    from cryptography.fernet import Fernet

    typer.echo(Fernet.generate_key().decode())


if __name__ == "__main__":
    app()
