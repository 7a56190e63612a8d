"""HTTP routes of the market service: parse, call one service function, return a schema."""

from __future__ import annotations

import inspect
import textwrap
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from services.market.schemas import (
    BulkFetchRequest,
    BulkFetchResult,
    HistoricalData,
    IndicatorSeries,
    LatestIndicator,
    MarketStatus,
    PriceQuote,
    SymbolList,
)
from services.market.service import MarketService
from shared.api import ProblemDocs
from shared.errors import ValidationProblemError
from shared.quant import INDICATORS, IndicatorSpec, LatestRoute, Param, default_names
from shared.rules import DATE_1900_2099, CrossFieldRule, TextRule, cross_field_rules
from shared.state import Slot

router = APIRouter()

SYMBOL_DOC = (
    "Ticker, case-insensitive: e.g. `AAPL`, `BRK-B`, `BRK.B`, `^GSPC` (S&P 500), `EURUSD=X`, "
    "`BTC-USD`: 1-10 letters or digits, an optional leading `^`, up to two more parts after "
    "`.` or `-`, an optional `=` suffix of 1-2 letters."
)
# The service's ticker rule (validation.SYMBOL_RE), before upper-casing: the spec says it.
SYMBOL_RULE = TextRule(
    r"^\^?[A-Za-z0-9]{1,10}(?:[.\-][A-Za-z0-9]{1,10}){0,2}(?:=[A-Za-z]{1,2})?$",
    "expected a ticker such as AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X or BTC-USD (1-10 letters "
    "or digits, an optional leading ^, up to two more parts after . or -, an optional = suffix "
    "of 1-2 letters)",
)
Symbol = Annotated[str, SYMBOL_RULE, Path(description=SYMBOL_DOC, examples=["AAPL", "^GSPC"])]
Start = Annotated[
    Annotated[date, DATE_1900_2099] | None,
    Query(
        description="First date, YYYY-MM-DD (1900-01-01 to 2099-12-31), inclusive. Default: "
        "one year before `end`."
    ),
]
End = Annotated[
    Annotated[date, DATE_1900_2099] | None,
    Query(
        description="Last date, YYYY-MM-DD (1900-01-01 to 2099-12-31), inclusive. Default: "
        "the latest available bar."
    ),
]
DATE_ORDER = CrossFieldRule(
    ("start", "end"),
    "`start` <= `end`; `end` defaults to the latest bar and `start` to one year before `end`, "
    "and a defaulted `start` is bound by 1900-01-01 too",
)
# The instants the NYSE calendar covers with a margin (calendar.CALENDAR_START/END).
AT_RULE = TextRule(
    r"^(199[1-9]|20[0-8][0-9]|209[0-8])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
    "expected an RFC 3339 instant from 1991 to 2098 with its offset, e.g. 2024-03-15T15:00:00Z "
    "or 2024-03-15T11:00:00-04:00",
    json_format="date-time",
)
INDICATOR_NAMES = "|".join(INDICATORS)
INDICATORS_RULE = TextRule(
    rf"^ *(?:{INDICATOR_NAMES}) *(?:, *(?:{INDICATOR_NAMES}) *)*$",
    f"expected indicator names, lower case, separated by commas, from: {', '.join(INDICATORS)}",
)
# What a failure means in this service's terms (tool descriptions are made from these).
errors = ProblemDocs(
    {
        404: "The symbol or resource does not exist.",
        502: "The market-data vendor could not be reached or answered nonsense.",
    }
)
READ_ERRORS = errors(401, 404, 422, 502, 503)


# The app's MarketService, built in its lifespan (an async dependency: no thread hop).
MARKET = Slot("market", MarketService)
Service = Annotated[MarketService, Depends(MARKET)]


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
    `as_of` is the bar's date; `stale` is true, with `age_sessions` the completed sessions
    since, when the data has no bar of the last completed session.
    """
    return await service.get_price(symbol)


HISTORICAL_DOC = """Return OHLCV bars between `start` and `end` (inclusive), oldest first.

Each bar has timestamp (UTC date), open, high, low, close, volume and adj_close.
`metadata` tells the vendor, whether the answer was cached, and a data-quality report:
rejected vendor rows, return outliers beyond 3 standard deviations, missing sessions.
Only missing date ranges are fetched from the vendor; stored bars are reused.
`coverage` compares the asked range with the bars answered (sessions missing before the
first and after the last bar) and `notes` says when either end falls short. A range with no
bar is a 404 `no_data` naming the range the data covers (`GET /symbols` lists them)."""


@router.get(
    "/historical/{symbol}",
    operation_id="get_historical",
    response_model=HistoricalData,
    response_model_exclude_none=True,
    responses=READ_ERRORS,
    summary="Historical OHLCV bars",
    **cross_field_rules(HISTORICAL_DOC, DATE_ORDER),
)
async def get_historical(
    symbol: Symbol,
    service: Service,
    start: Start = None,
    end: End = None,
    interval: Annotated[
        Literal["1d", "1wk", "1mo"],
        Query(description="Bar size: `1d` (daily), `1wk` or `1mo` (aggregated daily bars)."),
    ] = "1d",
    adjusted: Annotated[
        bool, Query(description="Scale open/high/low/close for dividends and splits.")
    ] = False,
    fill_gaps: Annotated[
        bool,
        Query(description="Forward-fill gaps of 1-2 missing sessions; filled bars are marked."),
    ] = False,
) -> HistoricalData:
    """Return OHLCV bars between `start` and `end` (inclusive), oldest first."""
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
        + ". Prices are unadjusted (split-adjusted vendor closes). `coverage` and `notes` say "
        "when the bars do not reach an end of the asked range; `as_of`, `stale` and "
        "`age_sessions` how old the last bar is. A window with no bar is a 404 `no_data`.",
        width=88,
    )
)


@router.get(
    "/indicators/{symbol}",
    operation_id="get_indicators",
    response_model=IndicatorSeries,
    responses=READ_ERRORS,
    summary="Technical indicator series",
    **cross_field_rules(
        INDICATORS_DOC,
        DATE_ORDER,
        CrossFieldRule(
            ("macd_fast", "macd_slow"), "`macd_fast` < `macd_slow` when `indicators` has `macd`"
        ),
    ),
)
async def get_indicators(
    symbol: Symbol,
    service: Service,
    indicators: Annotated[
        str,
        INDICATORS_RULE,
        Query(
            description="Comma-separated, lower case: "
            + ", ".join(f"`{name}`" for name in INDICATORS)
            + ".",
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


# Rules across one indicator's parameters, by indicator (spec.check enforces them).
LATEST_RULES = {"macd": CrossFieldRule(("fast", "slow"), "`fast` < `slow`")}


def _add_latest_route(spec: IndicatorSpec, route: LatestRoute) -> None:
    """Register `GET /<route.path>/{symbol}`: the latest value(s) of one indicator."""
    own_prefix = f"{spec.name}_"

    async def endpoint(symbol: Symbol, service: Service, **params: Any) -> LatestIndicator:
        try:
            return await service.latest_indicator(symbol, spec.name, params)
        except ValidationProblemError as e:
            # The service names parameters as /indicators does (macd_fast); here they are fast.
            if e.field is not None and e.field.startswith(own_prefix):
                e.field = e.field.removeprefix(own_prefix)
                e.detail = e.detail.replace(own_prefix, "")  # "fast must be less than slow"
            raise

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
        **(
            cross_field_rules(route.doc, LATEST_RULES[spec.name])
            if spec.name in LATEST_RULES
            else {"description": route.doc}
        ),
    )


for _spec in INDICATORS.values():
    if _spec.route is not None:
        _add_latest_route(_spec, _spec.route)


@router.get(
    "/symbols",
    operation_id="list_symbols",
    response_model=SymbolList,
    responses=errors(401, 503),
    summary="Symbols with data, and their first and last bar",
)
async def list_symbols(service: Service) -> SymbolList:
    """List every symbol the service has bars of: each data file's symbol (source `csv`,
    its whole range) and each stored symbol of another vendor, with the first and last bar
    date, whether the last bar is `stale` (older than the last completed NYSE session) and
    by how many sessions. Ask `GET /historical/{symbol}` for dates inside that range: a
    range without bars is a 404 `no_data` naming the range there is."""
    return await service.list_symbols()


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
        Annotated[datetime, AT_RULE] | None,
        Query(
            description="Instant to ask about, RFC 3339 with its offset (e.g. "
            "`2024-03-15T15:00:00Z`), from 1991 to 2098. Default: now."
        ),
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
