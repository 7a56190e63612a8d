"""`trading`: the project's one command-line interface."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

import typer

app = typer.Typer(help="AI trading research platform.", no_args_is_help=True, add_completion=False)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(asgi_app: object, port: int) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
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
) -> None:
    """Serve every service over HTTP in one process (Swagger UI at /market/docs)."""
    import uvicorn

    from shared.config import get_market_settings
    from shared.logging import configure_logging
    from shared.platform import build_platform_app

    configure_logging(get_market_settings().log_level)
    uvicorn.run(build_platform_app(), host=host, port=port, log_config=None)


@app.command()
def demo(
    symbols: str = typer.Option("AAPL,MSFT,NVDA,^GSPC", help="Comma-separated tickers."),
) -> None:
    """Start the market service, then print last price, RSI and MACD of a few symbols via HTTP."""
    import httpx

    from services.market.app import create_app
    from shared.config import MarketSettings
    from shared.logging import configure_logging

    configure_logging("WARNING")
    settings = MarketSettings()
    typer.echo(f"database : {settings.resolved_database_url()}")
    typer.echo(f"cache    : {'Redis ' + settings.redis_url if settings.redis_url else 'in-process'}")
    typer.echo(f"providers: {', '.join(settings.provider_order())} "
               f"(CSV folder: {settings.market_data_dir})")
    with serve_in_thread(create_app(settings), free_port()) as url, httpx.Client(
        base_url=url, timeout=60
    ) as http:
        typer.echo(f"service  : {url}  (OpenAPI at {url}/docs)\n")
        status = http.get("/market_status").json()
        typer.echo(f"NYSE now: {'OPEN' if status['is_open'] else 'closed'}; next open "
                   f"{status['next_open']}; next holidays {status['upcoming_holidays'][:3]}\n")
        header = f"{'symbol':<8}{'as of':<12}{'close':>11}{'chg %':>8}{'RSI14':>8}" \
                 f"{'MACD':>10}{'signal':>10}{'%R14':>8}  served from"
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
            )
        first = symbols.split(",")[0].strip()
        hist = http.get(f"/historical/{first}", params={"start": "2020-01-01"}).json()
        q = hist["metadata"]["quality"]
        typer.echo(
            f"\n{first} since 2020-01-01: {len(hist['bars'])} bars from {hist['metadata']['source']}"
            f"; quality: {q['rejected_count']} rejected, {q['outlier_count']} return outliers "
            f"(>3 sd), {q['missing_sessions']} missing sessions"
        )
        again = http.get(f"/historical/{first}", params={"start": "2020-01-01"}).json()
        typer.echo(f"same request again: served from {again['metadata']['cache_level']}")


if __name__ == "__main__":
    app()
