"""Result sizing and error mapping of the gateway: generic rules, checked on plain data."""

from __future__ import annotations

import json
import logging

import pytest

from gateway_mcp.results import (
    answer_size,
    fit_rows,
    paged_output_schema,
    problem_error,
    schema_has_rows,
    slice_rows,
)
from shared.errors import Problem, parse_problem

BARS = {"symbol": "X", "bars": [{"i": i, "close": float(i)} for i in range(250)], "n": 250}
COLUMNAR = {
    "symbol": "X",
    "timestamps": [f"t{i}" for i in range(250)],
    "values": {"rsi": list(range(250)), "macd": list(range(250))},
    "parameters": {"rsi": {"period": 14}},
}


def test_rows_are_cut_to_one_page_and_the_answer_says_how_to_go_on() -> None:
    out, page = slice_rows(BARS, limit=100, offset=0)
    assert [b["i"] for b in out["bars"]] == list(range(100))
    assert out["symbol"] == "X" and out["n"] == 250  # everything else untouched
    assert page is not None and page.cut
    info = page.info()
    assert info["total"] == 250 and info["returned"] == 100 and info["next_offset"] == 100
    assert info["totals"] == {"bars": 250}
    assert "offset=100" in info["note"]
    assert BARS["bars"][0]["i"] == 0 and len(BARS["bars"]) == 250  # input not mutated


def test_negative_offset_counts_from_the_end_and_the_last_page_has_no_next() -> None:
    out, page = slice_rows(BARS, limit=10, offset=-10)
    assert [b["i"] for b in out["bars"]] == list(range(240, 250))
    assert page is not None and page.info()["next_offset"] is None
    out, page = slice_rows(BARS, limit=100, offset=200)
    assert [b["i"] for b in out["bars"]] == list(range(200, 250))
    out, page = slice_rows(BARS, limit=100, offset=1000)
    assert out["bars"] == [] and page is not None and page.info()["returned"] == 0


def test_columnar_tables_are_cut_together() -> None:
    out, page = slice_rows(COLUMNAR, limit=5, offset=-5)
    assert out["timestamps"] == [f"t{i}" for i in range(245, 250)]
    assert out["values"] == {"rsi": list(range(245, 250)), "macd": list(range(245, 250))}
    assert out["parameters"] == COLUMNAR["parameters"]
    assert page is not None and page.info()["totals"] == {"timestamps": 250, "values": 250}


def test_a_top_level_list_is_rows_and_scalar_lists_alone_are_not() -> None:
    out, page = slice_rows(list(range(30)), limit=7, offset=0)
    assert out == list(range(7)) and page is not None and page.total == 30
    status = {"holidays": ["2024-01-01", "2024-01-15"], "open": True}
    assert slice_rows(status, limit=1, offset=0) == (status, None)
    assert slice_rows({"price": 1.0}, limit=1, offset=0) == ({"price": 1.0}, None)


def test_nothing_cut_means_no_page() -> None:
    small = {"bars": [{"i": 1}, {"i": 2}]}
    assert fit_rows(small, limit=100, offset=0, max_bytes=50_000) == (small, None)


def test_pages_shrink_to_fit_the_byte_limit() -> None:
    big = {"bars": [{"i": i, "pad": "x" * 200} for i in range(300)]}
    out, page = fit_rows(big, limit=1000, offset=0, max_bytes=10_000)
    assert answer_size({**out, "page": page}) <= 10_000
    assert answer_size({**out, "page": page}) > 9_000  # not needlessly small
    assert page is not None and 0 < page["returned"] < 300
    assert page["next_offset"] == page["returned"]
    assert "byte answer limit" in page["note"]


def test_which_schemas_get_paging_arguments(tmp_path: object) -> None:
    from trading.openapi import OPENAPI_DIR

    spec = json.loads((OPENAPI_DIR / "market.json").read_text())
    schemas = spec["components"]["schemas"]

    def schema(name: str) -> dict[str, object]:
        return {**schemas[name], "$defs": schemas}

    def rewrite(obj: object) -> object:  # OpenAPI refs -> JSON-schema-local refs
        text = json.dumps(obj).replace("#/components/schemas/", "#/$defs/")
        return json.loads(text)

    assert schema_has_rows(rewrite(schema("HistoricalData")))  # bars: array of objects
    assert schema_has_rows(rewrite(schema("IndicatorSeries")))  # columnar
    assert schema_has_rows(rewrite(schema("BulkFetchResult")))  # results
    assert not schema_has_rows(rewrite(schema("PriceQuote")))
    assert not schema_has_rows(rewrite(schema("LatestIndicator")))
    assert schema_has_rows({"type": "array", "items": {"type": "integer"}})  # a bare list
    # a list its schema caps at a few items fits any page: nothing to page
    row = {"type": "object", "properties": {"name": {"type": "string"}}}
    capped = {"type": "object", "properties": {"params": {"type": "array", "items": row}}}
    assert schema_has_rows(capped)
    capped["properties"]["params"]["maxItems"] = 16
    assert not schema_has_rows(capped)
    assert not schema_has_rows({"type": "array", "items": row, "maxItems": 16})
    spec = {"type": "object", "properties": {"bars": {"type": "array"}}}
    assert "page" in paged_output_schema(spec)["properties"]  # type: ignore[index]
    # With the whole spec as root, a response schema's $refs resolve: what the gateway does.
    root = {"components": {"schemas": schemas}}
    assert schema_has_rows({"$ref": "#/components/schemas/HistoricalData"}, root)
    assert not schema_has_rows({"$ref": "#/components/schemas/PriceQuote"}, root)
    assert not schema_has_rows(None)


def test_problem_details_become_a_tool_error_with_status_code_and_detail() -> None:
    body = json.dumps(
        {
            "type": "urn:problem:symbol_not_found",
            "title": "Not found",
            "status": 404,
            "detail": "Unknown symbol 'ZZZZ'",
            "code": "symbol_not_found",
            "field": "symbol",
        }
    )
    error = problem_error("market", parse_problem(404, body.encode(), "Not Found"))
    assert str(error) == (
        "market service error 404 symbol_not_found: Unknown symbol 'ZZZZ' (field: symbol)"
    )
    assert error.log_level == logging.DEBUG
    server = problem_error("market", Problem(title="Down", status=503, code="x", detail="down"))
    assert server.log_level == logging.WARNING


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>bad gateway</html>", "market service error 502 upstream_error: <html>bad"),
        (b"", "market service error 502 upstream_error: Bad Gateway"),
        (b'{"detail": [{"loc": ["q"]}]}', 'market service error 502 http_502: [{"loc"'),
    ],
)
def test_non_problem_error_bodies_still_give_a_clear_error(body: bytes, expected: str) -> None:
    assert str(problem_error("market", parse_problem(502, body, "Bad Gateway"))).startswith(
        expected
    )
