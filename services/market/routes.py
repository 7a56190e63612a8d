"""HTTP routes of the market service: parse, call one service function, return a schema."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from services.market.schemas import (
    BulkFetchItem,
    BulkFetchRequest,
    BulkFetchResult,
    HistoricalData,
    IndicatorSeries,
    LatestIndicator,
    MarketStatus,
    PriceQuote,
)
from services.market.service import MarketService
from shared.api import problem_responses

router = APIRouter()

SYMBOL_DOC = (
    "Ticker, case-insensitive: e.g. `AAPL`, `BRK-B`, `BRK.B`, `^GSPC` (S&P 500), `EURUSD=X`, "
    "`BTC-USD`."
)
Symbol = Annotated[str, Path(description=SYMBOL_DOC, max_length=40)]
Start = Annotated[
    date | None,
    Query(description="First date, YYYY-MM-DD, inclusive. Default: one year before `end`."),
]
End = Annotated[
    date | None,
    Query(description="Last date, YYYY-MM-DD, inclusive. Default: the latest available bar."),
]
READ_ERRORS = problem_responses(401, 404, 422, 502, 503)


def get_service(request: Request) -> MarketService:
    """Return the app's MarketService (built in lifespan)."""
    return request.app.state.market  # type: ignore[no-any-return]


Service = Annotated[MarketService, Depends(get_service)]


@router.get(
    "/price/{symbol}",
    operation_id="get_price",
    response_model=PriceQuote,
    responses=READ_ERRORS,
    summary="Latest price of a symbol",
)
async def get_price(symbol: Symbol, service: Service) -> dict[str, Any]:
    """Return the latest daily close of a symbol with its change from the previous close.

    Served from cache (5-minute TTL) when possible, else from stored bars if they include
    the last completed NYSE session, else from the data vendor. `cache_level` says which.
    """
    return await service.get_price(symbol)


@router.get(
    "/historical/{symbol}",
    operation_id="get_historical",
    response_model=HistoricalData,
    response_model_exclude_none=True,
    responses=READ_ERRORS,
    summary="Historical OHLCV bars",
)
async def get_historical(
    symbol: Symbol,
    service: Service,
    start: Start = None,
    end: End = None,
    interval: Annotated[
        str, Query(description="Bar size: `1d` (daily), `1wk` or `1mo` (aggregated daily bars).")
    ] = "1d",
    adjusted: Annotated[
        bool, Query(description="Scale open/high/low/close for dividends and splits.")
    ] = False,
    fill_gaps: Annotated[
        bool,
        Query(description="Forward-fill gaps of 1-2 missing sessions; filled bars are marked."),
    ] = False,
) -> dict[str, Any]:
    """Return OHLCV bars between `start` and `end` (inclusive), oldest first.

    Each bar has timestamp (UTC date), open, high, low, close, volume and adj_close.
    `metadata` tells the vendor, whether the answer was cached, and a data-quality report:
    rejected vendor rows, return outliers beyond 3 standard deviations, missing sessions.
    Only missing date ranges are fetched from the vendor; stored bars are reused.
    """
    return await service.get_history(
        symbol, start=start, end=end, interval=interval, adjusted=adjusted, fill_gaps=fill_gaps
    )


def _p(description: str, default: float, lo: float, hi: float, *, integer: bool = True) -> Any:
    return Query(default=default, ge=lo, le=hi, description=f"{description} (default {default}).")


@router.get(
    "/indicators/{symbol}",
    operation_id="get_indicators",
    response_model=IndicatorSeries,
    responses=READ_ERRORS,
    summary="Technical indicator series",
)
async def get_indicators(
    symbol: Symbol,
    service: Service,
    indicators: Annotated[
        str,
        Query(
            description="Comma-separated: `rsi`, `macd`, `bbands`, `williams_r`, `stochastic`.",
            max_length=200,
        ),
    ] = "rsi,macd,bbands,williams_r,stochastic",
    start: Start = None,
    end: End = None,
    rsi_period: int = _p("RSI period, Wilder smoothing", 14, 2, 1000),
    macd_fast: int = _p("MACD fast EMA period", 12, 2, 1000),
    macd_slow: int = _p("MACD slow EMA period, must exceed macd_fast", 26, 2, 1000),
    macd_signal: int = _p("MACD signal EMA period", 9, 1, 1000),
    bbands_period: int = _p("Bollinger moving-average period", 20, 2, 1000),
    bbands_nbdev: float = _p("Bollinger width in population standard deviations", 2.0, 0.1, 10.0),
    williams_r_period: int = _p("Williams %R look-back period", 14, 2, 1000),
    stochastic_k_period: int = _p("Stochastic %K look-back period", 14, 1, 1000),
    stochastic_k_smooth: int = _p("Stochastic slow-%K smoothing (SMA)", 3, 1, 1000),
    stochastic_d_period: int = _p("Stochastic %D period (SMA of slow %K)", 3, 1, 1000),
) -> dict[str, Any]:
    """Return indicator values for every bar between `start` and `end`, columnar.

    Values equal those computed on the full history (earlier bars are used for warm-up);
    bars before an indicator has a value are `null`. Definitions follow TA-Lib: RSI with
    Wilder smoothing, MACD on SMA-seeded EMAs, Bollinger bands with population standard
    deviation, Williams %R, slow Stochastic with SMA smoothing. Prices are unadjusted
    (split-adjusted vendor closes).
    """
    names = [n.strip().lower() for n in indicators.split(",") if n.strip()]
    params: dict[str, dict[str, Any]] = {
        "rsi": {"period": rsi_period},
        "macd": {"fast": macd_fast, "slow": macd_slow, "signal": macd_signal},
        "bbands": {"period": bbands_period, "nbdev": bbands_nbdev},
        "williams_r": {"period": williams_r_period},
        "stochastic": {
            "k_period": stochastic_k_period,
            "k_smooth": stochastic_k_smooth,
            "d_period": stochastic_d_period,
        },
    }
    return await service.get_indicators(symbol, names=names, params=params, start=start, end=end)


@router.get(
    "/rsi/{symbol}",
    operation_id="get_rsi",
    response_model=LatestIndicator,
    responses=READ_ERRORS,
    summary="Latest RSI",
)
async def get_rsi(
    symbol: Symbol, service: Service, period: int = _p("RSI period", 14, 2, 1000)
) -> dict[str, Any]:
    """Return the latest RSI (0-100, Wilder smoothing) of a symbol; above 70 is overbought."""
    return await service.latest_indicator(symbol, "rsi", {"period": period})


@router.get(
    "/williams_r/{symbol}",
    operation_id="get_williams_r",
    response_model=LatestIndicator,
    responses=READ_ERRORS,
    summary="Latest Williams %R",
)
async def get_williams_r(
    symbol: Symbol, service: Service, period: int = _p("Look-back period", 14, 2, 1000)
) -> dict[str, Any]:
    """Return the latest Williams %R (-100..0) of a symbol; above -20 is overbought."""
    return await service.latest_indicator(symbol, "williams_r", {"period": period})


@router.get(
    "/bollinger_bands/{symbol}",
    operation_id="get_bollinger_bands",
    response_model=LatestIndicator,
    responses=READ_ERRORS,
    summary="Latest Bollinger bands",
)
async def get_bollinger_bands(
    symbol: Symbol,
    service: Service,
    period: int = _p("Moving-average period", 20, 2, 1000),
    nbdev: float = _p("Band width in population standard deviations", 2.0, 0.1, 10.0),
) -> dict[str, Any]:
    """Return the latest upper, middle (SMA) and lower Bollinger bands of a symbol."""
    return await service.latest_indicator(symbol, "bbands", {"period": period, "nbdev": nbdev})


@router.get(
    "/macd/{symbol}",
    operation_id="get_macd",
    response_model=LatestIndicator,
    responses=READ_ERRORS,
    summary="Latest MACD",
)
async def get_macd(
    symbol: Symbol,
    service: Service,
    fast: int = _p("Fast EMA period", 12, 2, 1000),
    slow: int = _p("Slow EMA period, must exceed fast", 26, 2, 1000),
    signal: int = _p("Signal EMA period", 9, 1, 1000),
) -> dict[str, Any]:
    """Return the latest MACD line, signal line and histogram of a symbol."""
    return await service.latest_indicator(
        symbol, "macd", {"fast": fast, "slow": slow, "signal": signal}
    )


@router.get(
    "/market_status",
    operation_id="get_market_status",
    response_model=MarketStatus,
    responses=problem_responses(401, 422),
    summary="NYSE open or closed",
)
async def get_market_status(
    service: Service,
    at: Annotated[
        datetime | None,
        Query(description="Instant to ask about, ISO 8601 (default now); naive means UTC."),
    ] = None,
) -> dict[str, Any]:
    """Return whether NYSE is open at an instant, the next open and close, and upcoming
    holidays and early closes (from the maintained exchange_calendars library)."""
    return await service.market_status(at)


@router.post(
    "/bulk_fetch",
    operation_id="bulk_fetch",
    response_model=BulkFetchResult,
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 422, 503),
    summary="Prices or bars for many symbols",
)
async def bulk_fetch(body: BulkFetchRequest, service: Service) -> dict[str, Any]:
    """Fetch up to 50 symbols concurrently. Each symbol gets its own entry: its data, or
    its own problem-details error; one failing symbol never fails the others."""
    results = await service.bulk_fetch(body.symbols, kind=body.kind, start=body.start, end=body.end)
    ok = sum(1 for r in results if r["ok"])
    return {
        "results": [BulkFetchItem.model_validate(r) for r in results],
        "succeeded": ok,
        "failed": len(results) - ok,
    }
