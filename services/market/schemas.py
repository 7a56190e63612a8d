"""Public contract of the market service: every field is documented for a cold reader.

These models become the MCP tool descriptions, so units and meanings are spelled out.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Problem
from shared.health import Health as BaseHealth
from shared.quant import all_columns
from shared.rules import DATE_1900_2099

CacheLevel = Literal["l1", "l2", "database", "provider"]


class Answer(BaseModel):
    """Base of the answer models: frozen, so a cached answer can be shared but never changed."""

    model_config = ConfigDict(frozen=True)


CACHE_LEVEL_DOC = (
    "Where this answer came from: `l1` in-process cache, `l2` Redis, `database` stored bars, "
    "`provider` freshly fetched from the data vendor."
)


class PriceQuote(Answer):
    """Latest daily bar of a symbol: the last close and its change from the previous close."""

    symbol: str = Field(description="Normalised ticker, upper case (e.g. `AAPL`, `^GSPC`).")
    price: float = Field(description="Last close, in the instrument's currency.")
    open: float = Field(description="Open of the latest bar.")
    high: float = Field(description="High of the latest bar.")
    low: float = Field(description="Low of the latest bar.")
    close: float = Field(description="Close of the latest bar (same as `price`).")
    previous_close: float | None = Field(
        default=None, description="Close of the bar before, if any."
    )
    change: float | None = Field(default=None, description="`close - previous_close`.")
    change_percent: float | None = Field(
        default=None, description="Change in percent of previous close."
    )
    volume: int = Field(description="Shares (or units) traded in the latest bar.")
    timestamp: datetime = Field(description="Date of the latest bar, UTC midnight (as-of).")
    source: str = Field(
        description="Data vendor that supplied the bar: `csv` or `yfinance`; a vendor skipped "
        "because its circuit is open is named too (`csv,yfinance skipped (circuit open)`)."
    )
    cached: bool = Field(description="True when served from L1 or L2 cache.")
    cache_level: CacheLevel = Field(description=CACHE_LEVEL_DOC)
    as_of: date = Field(description="Date of the latest bar this answer is from.")
    stale: bool = Field(
        description="True when `as_of` is before the last completed session of the symbol's "
        "exchange (the data has not caught up)."
    )
    age_sessions: int = Field(
        description="Completed exchange sessions after `as_of` (0 when up to date)."
    )


class Bar(Answer):
    """One OHLCV bar. Prices are split-adjusted vendor prices unless `adjusted=true`."""

    timestamp: datetime = Field(description="Bar date (first trading day of the period), UTC.")
    open: float
    high: float
    low: float
    close: float
    volume: int = Field(description="Shares traded (summed over the period for 1wk/1mo).")
    adj_close: float | None = Field(
        default=None, description="Close adjusted for splits and dividends."
    )
    filled: bool | None = Field(
        default=None,
        description="Only with `fill_gaps=true`: true for a forward-filled bar (no trading data).",
    )


class RejectedRow(Answer):
    """A vendor row that failed validation and was neither stored nor cached."""

    timestamp: str
    reason: str


class Outlier(Answer):
    """A bar whose close-to-close return is beyond 3 standard deviations."""

    model_config = ConfigDict(populate_by_name=True)

    timestamp: str
    return_: float = Field(alias="return", description="Simple return of the bar.")
    zscore: float


class Gap(Answer):
    """A run of expected trading sessions with no bar."""

    start: date
    end: date
    missing_sessions: int


class QualityReport(Answer):
    """Data-quality findings for the returned bars (at most 50 items listed per kind)."""

    rows: int = Field(description="Bars checked.")
    rejected_count: int = Field(description="Vendor rows rejected while fetching this window.")
    rejected: list[RejectedRow]
    outlier_count: int = Field(description="Returns beyond 3 standard deviations.")
    outliers: list[Outlier]
    missing_sessions: int = Field(description="Exchange sessions with no bar in the window.")
    gaps: list[Gap]
    filled_rows: int = Field(description="Bars forward-filled because `fill_gaps=true`.")
    ok: bool = Field(description="True when nothing was rejected and no session is missing.")


class HistoricalMetadata(Answer):
    """Where the bars came from and how good they are."""

    source: str | None = Field(
        default=None, description="Vendor(s) that supplied the bars, comma-separated."
    )
    cached: bool = Field(description="True when served from L1 or L2 cache.")
    cache_level: CacheLevel = Field(description=CACHE_LEVEL_DOC)
    rows: int = Field(description="Number of bars returned.")
    quality: QualityReport


class CoverageReport(Answer):
    """The asked range against the bars answered: sessions short at each end."""

    asked_start: date
    asked_end: date
    first_bar: date = Field(description="Date of the first bar answered.")
    last_bar: date = Field(description="Date of the last bar answered.")
    sessions_missing_before: int = Field(
        description="Sessions of the exchange from `asked_start` to before `first_bar`."
    )
    sessions_missing_after: int = Field(
        description="Completed sessions after `last_bar` up to `asked_end`."
    )
    complete: bool = Field(description="True when both counts are 0.")


NOTES_DOC = (
    "Plain-language notes; one per end of the asked range the answer does not reach "
    "(coverage is never silently short)."
)


class HistoricalData(Answer):
    """OHLCV bars of one symbol between two dates (inclusive), oldest first."""

    symbol: str
    interval: Literal["1d", "1wk", "1mo"]
    adjusted: bool = Field(description="True when OHLC were scaled by adj_close/close.")
    start: date
    end: date
    bars: list[Bar]
    metadata: HistoricalMetadata
    coverage: CoverageReport
    notes: list[str] = Field(default_factory=list, description=NOTES_DOC)


class IndicatorSeries(Answer):
    """Indicator values, columnar: `timestamps[i]` goes with `values[name][i]`."""

    symbol: str
    start: date
    end: date
    timestamps: list[datetime] = Field(description="Bar dates in the window, UTC.")
    values: dict[str, list[float | None]] = Field(
        description="One array per output: "
        + ", ".join(f"`{column}`" for column in all_columns())
        + ". `null` where the indicator has no value yet (warm-up)."
    )
    parameters: dict[str, dict[str, float | int]] = Field(
        description="Parameters used per indicator, defaults filled in."
    )
    warmup_bars_used: int = Field(
        description="Bars before `start` used so values equal those on the full history."
    )
    source: str | None = None
    cached: bool
    cache_level: CacheLevel = Field(description=CACHE_LEVEL_DOC)
    coverage: CoverageReport
    notes: list[str] = Field(default_factory=list, description=NOTES_DOC)
    as_of: date = Field(description="Date of the last bar of the window.")
    stale: bool = Field(
        description="True when `as_of` is before the last completed session of the symbol's "
        "exchange, or before `end` when that is earlier (the data has not caught up)."
    )
    age_sessions: int = Field(
        description="Completed exchange sessions after `as_of` (0 when up to date)."
    )


class LatestIndicator(Answer):
    """The latest value(s) of one indicator, on the latest available bar."""

    symbol: str
    indicator: str
    parameters: dict[str, float | int]
    timestamp: datetime = Field(description="Date of the bar the value belongs to.")
    values: dict[str, float | None] = Field(description="Output name -> latest value.")
    source: str | None = None
    cached: bool
    cache_level: CacheLevel = Field(description=CACHE_LEVEL_DOC)
    as_of: date = Field(description="Date of the latest bar this answer is from.")
    stale: bool = Field(
        description="True when `as_of` is before the last completed session of the symbol's "
        "exchange (the data has not caught up)."
    )
    age_sessions: int = Field(
        description="Completed exchange sessions after `as_of` (0 when up to date)."
    )


class EarlyClose(Answer):
    """A session that closes early."""

    date: date
    close: datetime = Field(description="Early close time, UTC.")


class MarketStatus(Answer):
    """NYSE status at an instant, from the exchange_calendars library."""

    exchange: str = Field(description="ISO 10383 MIC of the calendar (XNYS).")
    timezone: str
    at: datetime = Field(description="The instant asked about, UTC.")
    is_open: bool = Field(description="True during regular trading hours.")
    is_trading_day: bool
    session_open: datetime | None = Field(
        default=None, description="Today's open, UTC, if a trading day."
    )
    session_close: datetime | None = Field(
        default=None, description="Today's close, UTC, if a trading day."
    )
    is_early_close: bool
    next_open: datetime
    next_close: datetime
    upcoming_holidays: list[date] = Field(description="Weekday holidays in the next 365 days.")
    upcoming_early_closes: list[EarlyClose]
    calendar_source: str
    horizon_end: date


class BulkFetchRequest(BaseModel):
    """Many symbols at once."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        min_length=1,
        max_length=50,
        description="1 to 50 tickers; each is checked on its own (an invalid or unknown one "
        "fails only its own entry).",
    )
    kind: Literal["price", "historical"] = Field(
        default="price", description="`price` for latest quotes, `historical` for bars."
    )
    start: Annotated[date, DATE_1900_2099] | None = Field(
        default=None,
        description="For `historical`: first date, YYYY-MM-DD (1900-01-01 to 2099-12-31). "
        "`start` <= `end` (else every entry fails with its own 422 problem).",
    )
    end: Annotated[date, DATE_1900_2099] | None = Field(
        default=None,
        description="For `historical`: last date, YYYY-MM-DD (1900-01-01 to 2099-12-31).",
    )


class BulkFetchItem(BaseModel):
    """One symbol's outcome: either its data or its own error."""

    symbol: str = Field(description="The symbol as requested.")
    ok: bool
    price: PriceQuote | None = None
    historical: HistoricalData | None = None
    error: Problem | None = Field(default=None, description="Why this symbol failed.")


class BulkFetchResult(BaseModel):
    """Per-symbol results, in request order."""

    results: list[BulkFetchItem]
    succeeded: int
    failed: int


class SymbolInfo(Answer):
    """One symbol the service can answer, and the bars it has of it."""

    symbol: str
    first_bar: date = Field(description="Date of the first bar.")
    last_bar: date = Field(description="Date of the last bar.")
    source: str = Field(
        description="Where the bars come from: `csv` (the data folder, its whole file) or "
        "the vendor that supplied the stored bars (`yfinance`)."
    )
    stale: bool = Field(description="True when `last_bar` is before the last completed session.")
    age_sessions: int = Field(description="Completed exchange sessions after `last_bar`.")


class SymbolList(Answer):
    """Every symbol with a data file or stored bars, by symbol then source."""

    symbols: list[SymbolInfo]
    last_completed_session: date = Field(description="Of the NYSE calendar, at answer time.")


class Health(BaseHealth):
    """Liveness, the state of backing stores, and the providers in use."""

    providers: list[str]
