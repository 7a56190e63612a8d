"""A Yahoo outage: a circuit breaker per provider and a deadline per request.

Yahoo is the fake at the HTTP boundary (conftest.FakeYahoo); the chain asks it first and the
real CSV folder second. The breaker's clock is a settable counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from services.market.providers import CsvProvider
from services.market.schemas import BulkFetchResult
from services.market.settings import SHARED_CSV_DIR
from tests.unit.market.conftest import FakeYahoo, market_service, provider

pytestmark = [
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_index"),
    pytest.mark.usefixtures("isolated_yfinance"),
]

CSV_SYMBOLS = sorted(
    p.stem for p in SHARED_CSV_DIR.glob("*.csv") if p.stem.isalpha() and p.stem != "GSPC"
)


def chart_calls(fake: FakeYahoo) -> int:
    return sum(c.path.startswith("/v8/finance/chart/") for c in fake.calls)


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_after_repeated_failures_yahoo_is_skipped_then_probed_again(
    csv_bars: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeYahoo(csv_bars, hang_s=0.05)  # every chart request times out
    ticks = Ticks()
    caplog.set_level(logging.WARNING)

    async def run() -> dict[str, Any]:
        svc = await market_service(
            tmp_path,
            provider(fake, max_attempts=2),
            CsvProvider(SHARED_CSV_DIR),
            chain={"failure_threshold": 2, "cooldown_s": 60.0, "clock": ticks},
        )
        out: dict[str, Any] = {}
        try:
            out["first"] = [(await svc.get_price(s)).source for s in ("MSFT", "KO")]
            out["calls_when_open"] = chart_calls(fake)
            out["skipped"] = (await svc.get_price("PG")).source
            out["calls_after_skip"] = chart_calls(fake)
            out["state_open"] = svc.providers.breaker_states()[0]
            ticks.t += 60  # cool-down over: one trial call goes to Yahoo, which is back
            fake.hang_s = 0.0
            out["trial"] = (await svc.get_price("AAPL")).source
            out["state_after"] = svc.providers.breaker_states()[0]["state"]
        finally:
            await svc.providers.aclose()
            await svc.db.dispose()
        return out

    out = asyncio.run(run())
    assert out["first"] == ["csv", "csv"]  # Yahoo failed, the CSV folder answered
    assert out["calls_when_open"] == 4  # two symbols x two attempts
    assert out["skipped"] == "csv,yfinance skipped (circuit open)"
    assert out["calls_after_skip"] == out["calls_when_open"]  # Yahoo was not asked
    state = out["state_open"]
    assert (state["name"], state["state"], state["opened"]) == ("provider yfinance", "open", 1)
    assert state["skipped"] == 1
    assert out["trial"] == "yfinance" and out["state_after"] == "closed"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("circuit open" in m for m in messages) == 1
    assert sum("circuit closed" in m for m in messages) == 1


def test_bulk_fetch_of_50_symbols_with_yahoo_hanging_ends_within_the_request_deadline(
    csv_bars: pd.DataFrame, tmp_path: Path
) -> None:
    # Every Yahoo request hangs 2 s (ignoring its timeout); 3 attempts of 2 s each would cost
    # 6 s per symbol, about 40 s for 50 symbols 8 at a time. The deadline is 1 s.
    fake = FakeYahoo(csv_bars, hang_s=2.0)
    unknown = [f"ZZ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(50 - len(CSV_SYMBOLS))]
    symbols = CSV_SYMBOLS + unknown

    async def run() -> tuple[BulkFetchResult, float, list[dict[str, object]]]:
        svc = await market_service(
            tmp_path,
            provider(fake, timeout_s=2.0, max_attempts=3),
            CsvProvider(SHARED_CSV_DIR),
            request_deadline_s=1.0,
        )
        try:
            started = time.monotonic()
            result = await svc.bulk_fetch(symbols, kind="price", start=None, end=None)
            return result, time.monotonic() - started, svc.providers.breaker_states()
        finally:
            fake.release()
            await svc.providers.aclose()
            await svc.db.dispose()

    result, took, states = asyncio.run(run())
    assert len(symbols) == 50 and len(result.results) == 50
    by_symbol = {item.symbol: item for item in result.results}
    for symbol in CSV_SYMBOLS:  # every symbol the CSV folder has is answered
        item = by_symbol[symbol]
        assert item.ok and item.price is not None and item.price.source.startswith("csv")
    for symbol in unknown:  # the others fail on their own, as unavailable, not "unknown"
        item = by_symbol[symbol]
        assert not item.ok and item.error is not None
        assert item.error.code == "provider_unavailable"
    sources = [by_symbol[s].price.source for s in CSV_SYMBOLS]  # type: ignore[union-attr]
    assert any("yfinance skipped" in s for s in sources)  # the answers say Yahoo was skipped
    # No request to Yahoo was given more time than the request's deadline.
    assert all(isinstance(c.timeout, float) and c.timeout <= 1.0 for c in fake.calls)
    assert states[0]["state"] == "open"
    assert took < 15.0  # a bound far inside the gateway's 30 s (not a speed measurement)
