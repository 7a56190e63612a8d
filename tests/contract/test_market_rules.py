"""The market spec says what the service accepts: every input its patterns allow is accepted by
the service's own rules, and a refused one gets a 422 naming the field and the rule."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from services.market.app import create_app
from services.market.calendar import market_status
from services.market.routes import AT_RULE, INDICATORS_RULE, SYMBOL_RULE
from services.market.settings import SHARED_CSV_DIR
from services.market.validation import check_date_range, normalize_symbol
from shared.quant import INDICATORS
from shared.rules import DATE_1900_2099
from tests.conftest import market_settings


@given(st.from_regex(SYMBOL_RULE.pattern, fullmatch=True))
def test_every_symbol_the_spec_allows_is_a_ticker_for_the_service(symbol: str) -> None:
    assert normalize_symbol(symbol) == symbol.upper()


def _real_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@given(st.from_regex(DATE_1900_2099.pattern, fullmatch=True).filter(_real_date))
def test_every_date_the_spec_allows_is_within_the_service_bounds(text: str) -> None:
    day = date.fromisoformat(text)
    check_date_range(day, day, today=date.today())


@settings(max_examples=30, deadline=None)
@given(st.from_regex(AT_RULE.pattern, fullmatch=True).filter(lambda t: _real_date(t[:10])))
def test_every_instant_the_spec_allows_is_within_the_calendar(text: str) -> None:
    status = market_status(datetime.fromisoformat(text.replace("Z", "+00:00")))
    assert status["exchange"] == "XNYS"


@given(st.from_regex(INDICATORS_RULE.pattern, fullmatch=True))
def test_every_indicator_list_the_spec_allows_names_known_indicators(text: str) -> None:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    assert names and set(names) <= set(INDICATORS)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp("market-rules")
    with TestClient(create_app(market_settings(data_dir, SHARED_CSV_DIR))) as c:
        yield c


@pytest.mark.parametrize(
    ("url", "field", "words"),
    [
        ("/price/BAD!!", "symbol", "expected a ticker such as AAPL"),
        ("/rsi/" + "0" * 40, "symbol", "1-10 letters or digits"),
        ("/historical/AAPL?start=1850-01-01", "start", "from 1900-01-01 to 2099-12-31"),
        ("/historical/AAPL?end=2150-01-01", "end", "YYYY-MM-DD"),
        ("/market_status?at=2716-02-08T07:29:44Z", "at", "from 1991 to 2098"),
        ("/market_status?at=2024-03-15T15:00:00", "at", "with its offset"),
        ("/indicators/AAPL?indicators=rsi,foo", "indicators", "separated by commas"),
    ],
)
def test_a_refused_input_gets_a_problem_naming_the_field_and_the_rule(
    client: TestClient, url: str, field: str, words: str
) -> None:
    answer = client.get(url)
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["field"] == field
    assert words in problem["detail"], problem["detail"]
    assert re.match(rf"^{field}: ", problem["detail"])


def test_cross_field_rules_are_documented_in_the_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    rules = {
        path: [tuple(r["fields"]) for r in ops["get"].get("x-cross-field-rules", [])]
        for path, ops in spec["paths"].items()
        if "get" in ops
    }
    assert rules["/historical/{symbol}"] == [("start", "end")]
    assert rules["/indicators/{symbol}"] == [("start", "end"), ("macd_fast", "macd_slow")]
    assert rules["/macd/{symbol}"] == [("fast", "slow")]
    description = spec["paths"]["/macd/{symbol}"]["get"]["description"]
    assert "Rules across inputs" in description and "`fast` < `slow`" in description
    # The rule as the service enforces it: the problem names the documented field.
    answer = client.get("/macd/AAPL", params={"fast": 26, "slow": 12})
    assert answer.status_code == 422 and answer.json()["field"] == "fast"
    answer = client.get("/historical/AAPL", params={"start": "2021-01-02", "end": "2021-01-01"})
    assert answer.status_code == 422 and answer.json()["field"] == "start"
