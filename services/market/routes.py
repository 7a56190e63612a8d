"""HTTP routes of the market service: parse, call one service function, return a schema."""

from __future__ import annotations

import inspect
import textwrap
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from services.market.schemas import (
    BulkFetchRequest,
    BulkFetchResult,
    HistoricalData,
    IndicatorSeries,
    LatestIndicator,
    MarketStatus,
    PriceQuote,
)
from services.market.service import MarketService
from shared.api import ProblemDocs
from shared.quant import INDICATORS, IndicatorSpec, LatestRoute, Param, default_names

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
# What a failure means in this service's terms (tool descriptions are made from these).
errors = ProblemDocs(
    {
        404: "The symbol or resource does not exist.",
        502: "The market-data vendor could not be reached or answered nonsense.",
    }
)
READ_ERRORS = errors(401, 404, 422, 502, 503)


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
async def get_price(symbol: Symbol, service: Service) -> PriceQuote:
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
) -> HistoricalData:
    """Return OHLCV bars between `start` and `end` (inclusive), oldest first.

    Each bar has timestamp (UTC date), open, high, low, close, volume and adj_close.
    `metadata` tells the vendor, whether the answer was cached, and a data-quality report:
    rejected vendor rows, return outliers beyond 3 standard deviations, missing sessions.
    Only missing date ranges are fetched from the vendor; stored bars are reused.
    """
    return await service.get_history(
        symbol, start=start, end=end, interval=interval, adjusted=adjusted, fill_gaps=fill_gaps
    )


def _query(param: Param, doc: str) -> Any:
    """Return the Query declaring one indicator parameter (bounds and default from the spec)."""
    return Query(
        default=param.default,
        ge=param.lo,
        le=param.hi,
        description=f"{doc} (default {param.default}).",
    )


def _with_query_params(endpoint: Any, params: dict[str, tuple[Param, str]]) -> None:
    """Replace endpoint's `**params` by one declared query parameter per entry (name -> spec).

    FastAPI reads the signature to parse and document the request, then calls the endpoint
    with every parameter by keyword, so the generated ones arrive in `**params`.
    """
    sig = inspect.signature(endpoint, eval_str=True)
    fixed = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    generated = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_query(param, doc),
            annotation=int if param.is_int else float,
        )
        for name, (param, doc) in params.items()
    ]
    endpoint.__signature__ = sig.replace(parameters=[*fixed, *generated])


INDICATORS_DOC = (
    "Return indicator values for every bar between `start` and `end`, columnar.\n\n"
    + textwrap.fill(
        "Values equal those computed on the full history (earlier bars are used for warm-up); "
        "bars before an indicator has a value are `null`. Definitions follow TA-Lib: "
        + ", ".join(spec.definition for spec in INDICATORS.values())
        + ". Prices are unadjusted (split-adjusted vendor closes).",
        width=88,
    )
)


@router.get(
    "/indicators/{symbol}",
    operation_id="get_indicators",
    response_model=IndicatorSeries,
    responses=READ_ERRORS,
    summary="Technical indicator series",
    description=INDICATORS_DOC,
)
async def get_indicators(
    symbol: Symbol,
    service: Service,
    indicators: Annotated[
        str,
        Query(
            description="Comma-separated: " + ", ".join(f"`{name}`" for name in INDICATORS) + ".",
            max_length=200,
        ),
    ] = ",".join(default_names()),
    start: Start = None,
    end: End = None,
    **params: Any,
) -> IndicatorSeries:
    """Return indicator values for every bar between `start` and `end`, columnar."""
    names = [n.strip().lower() for n in indicators.split(",") if n.strip()]
    per_indicator = {
        name: {key: params[f"{name}_{key}"] for key in spec.params}
        for name, spec in INDICATORS.items()
    }
    return await service.get_indicators(
        symbol, names=names, params=per_indicator, start=start, end=end
    )


_with_query_params(
    get_indicators,
    {
        f"{name}_{key}": (param, param.doc)
        for name, spec in INDICATORS.items()
        for key, param in spec.params.items()
    },
)


def _add_latest_route(spec: IndicatorSpec, route: LatestRoute) -> None:
    """Register `GET /<route.path>/{symbol}`: the latest value(s) of one indicator."""

    async def endpoint(symbol: Symbol, service: Service, **params: Any) -> LatestIndicator:
        return await service.latest_indicator(symbol, spec.name, params)

    endpoint.__name__ = f"get_{route.path}"
    endpoint.__doc__ = route.doc
    _with_query_params(
        endpoint,
        {key: (param, param.route_doc or param.doc) for key, param in spec.params.items()},
    )
    router.add_api_route(
        f"/{route.path}/{{symbol}}",
        endpoint,
        methods=["GET"],
        operation_id=f"get_{route.path}",
        response_model=LatestIndicator,
        responses=READ_ERRORS,
        summary=route.summary,
        description=route.doc,
    )


for _spec in INDICATORS.values():
    if _spec.route is not None:
        _add_latest_route(_spec, _spec.route)


@router.get(
    "/market_status",
    operation_id="get_market_status",
    response_model=MarketStatus,
    responses=errors(401, 422),
    summary="NYSE open or closed",
)
async def get_market_status(
    service: Service,
    at: Annotated[
        datetime | None,
        Query(description="Instant to ask about, ISO 8601 (default now); naive means UTC."),
    ] = None,
) -> MarketStatus:
    """Return whether NYSE is open at an instant, the next open and close, and upcoming
    holidays and early closes (from the maintained exchange_calendars library)."""
    return await service.market_status(at)


@router.post(
    "/bulk_fetch",
    operation_id="bulk_fetch",
    response_model=BulkFetchResult,
    response_model_exclude_none=True,
    responses=errors(400, 401, 422, 503),
    summary="Prices or bars for many symbols",
)
async def bulk_fetch(body: BulkFetchRequest, service: Service) -> BulkFetchResult:
    """Fetch up to 50 symbols concurrently. Each symbol gets its own entry: its data, or
    its own problem-details error; one failing symbol never fails the others."""
    return await service.bulk_fetch(body.symbols, kind=body.kind, start=body.start, end=body.end)
