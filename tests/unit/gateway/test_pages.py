"""Multi-symbol answers come in pages sized by bytes, each naming the call for the next one.

Checked on plain data (`gateway_mcp.pages`) and through MCP on the market's bulk fetch of
ten symbols from the shared data: every page is within GATEWAY_PAGE_BYTES, the pages cover
every symbol and every bar exactly once and in order, and one symbol larger than a page is
split along its bars.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from gateway_mcp.pages import Cursor, byte_page, largest_list, schema_has_documents
from gateway_mcp.results import answer_size
from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.market.settings import SHARED_CSV_DIR

SYMBOLS = sorted(p.stem for p in SHARED_CSV_DIR.glob("*.csv"))[:10]
YEAR = {"kind": "historical", "start": "2022-01-01", "end": "2022-12-31"}
NEXT_CURSOR = re.compile(r'cursor="([0-9:]+)"\)$')


def document(sizes: list[int]) -> dict[str, Any]:
    """Return an answer with one row per size, each holding that many bars."""
    rows = [
        {
            "symbol": f"S{i}",
            "ok": True,
            "data": {"bars": [{"i": j, "c": j * 1.5, "v": "x" * 30} for j in range(n)]},
        }
        for i, n in enumerate(sizes)
    ]
    return {"results": rows, "succeeded": len(rows), "failed": 0}


def all_pages(data: dict[str, Any], page_bytes: int) -> list[tuple[dict[str, Any], Any]]:
    pages, cursor = [], Cursor()
    while True:
        out, page = byte_page(
            data, cursor=cursor, page_bytes=page_bytes, next_call=lambda at: f'f(cursor="{at}")'
        )
        pages.append((out, page))
        if page is None or page["next_cursor"] is None:
            return pages
        cursor = Cursor.parse(page["next_cursor"])
        assert len(pages) < 1000


def covered(pages: list[tuple[dict[str, Any], Any]]) -> list[tuple[str, int]]:
    return [
        (r["symbol"], b["i"]) for out, _ in pages for r in out["results"] for b in r["data"]["bars"]
    ]


def test_pages_hold_whole_rows_while_they_fit_and_cover_every_row_once() -> None:
    data = document([3, 10, 2, 5, 12, 1, 8])  # rows of 0.1 to 0.8 kB
    pages = all_pages(data, 1500)

    assert len(pages) > 2
    for out, page in pages:
        assert answer_size({**out, "page": page}) <= 1500
        assert page["parts"] == []  # every row fits a page: none is cut
        assert out["succeeded"] == 7  # what is not rows stays on every page
    expected = [(r["symbol"], b["i"]) for r in data["results"] for b in r["data"]["bars"]]
    assert covered(pages) == expected
    assert pages[-1][1]["next"] is None and "Last page" in pages[-1][1]["note"]
    assert pages[0][1]["next"] == f'f(cursor="{pages[0][1]["next_cursor"]}")'


def test_a_row_larger_than_a_page_is_split_along_its_largest_list() -> None:
    data = document([2, 2000, 3])  # the second row alone is some 120 kB
    pages = all_pages(data, 4000)

    expected = [(r["symbol"], b["i"]) for r in data["results"] for b in r["data"]["bars"]]
    assert covered(pages) == expected
    parts = [part for _, page in pages for part in page["parts"]]
    assert len(parts) == len(pages)  # the row runs from the end of page 1 to page n
    assert all(part.startswith("results[1].data.bars ") for part in parts)
    assert all(answer_size({**out, "page": page}) <= 4000 for out, page in pages)
    assert largest_list(data["results"][1]) == ("data", "bars")


def test_an_answer_within_a_page_is_not_paged_and_bad_cursors_are_refused() -> None:
    small = document([2, 3])
    assert byte_page(small, cursor=Cursor(), page_bytes=4000, next_call=str) == (small, None)
    with pytest.raises(ToolError, match="not a page cursor"):
        Cursor.parse("x1")
    with pytest.raises(ToolError, match="past the answer's 2 rows"):
        byte_page(small, cursor=Cursor(5), page_bytes=4000, next_call=str)
    assert str(Cursor.parse("3:120")) == "3:120" and Cursor.parse(None) == Cursor()


def test_only_answers_whose_rows_hold_rows_are_paged_by_size() -> None:
    spec = json.loads((Path(__file__).resolve().parents[3] / "openapi/market.json").read_text())
    schemas = spec["components"]["schemas"]
    assert schema_has_documents({"$ref": "#/components/schemas/BulkFetchResult"}, spec)
    assert not schema_has_documents({"$ref": "#/components/schemas/HistoricalData"}, spec)
    assert "BulkFetchResult" in schemas


async def _fetch_all(client: Client, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Call market_bulk_fetch, then each page's `next` call, until the last page."""
    answers, cursor = [], None
    while True:
        call = {**args, **({"cursor": cursor} if cursor else {})}
        answer = await client.call_tool("market_bulk_fetch", call)
        answers.append(answer.structured_content)
        page = answer.structured_content.get("page")
        if not page or page["next"] is None:
            return answers
        cursor = NEXT_CURSOR.search(page["next"]).group(1)  # type: ignore[union-attr]
        assert page["next"].startswith("market_bulk_fetch(symbols=")
        assert len(answers) < 200


def test_ten_symbols_come_in_byte_sized_pages_covering_every_bar_once(data_env: Path) -> None:
    settings = GatewaySettings(toolsets="market")
    gateway = build_gateway(settings)

    async def go() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        async with Client(gateway) as client:
            pages = await _fetch_all(client, {"symbols": SYMBOLS, **YEAR})
            rest = gateway.services["market"].client  # type: ignore[attr-defined]
            whole = await rest.post("/bulk_fetch", json={"symbols": SYMBOLS, **YEAR})
            tools = {t.name: t for t in await client.list_tools()}
            return pages, whole.json(), tools["market_bulk_fetch"].input_schema

    pages, whole, schema = anyio.run(go)
    assert "cursor" in schema["properties"] and "limit" not in schema["properties"]
    sizes = [answer_size(p) for p in pages]
    assert len(pages) >= 5 and max(sizes) <= settings.page_bytes, sizes
    assert sum(sizes) / len(sizes) > settings.page_bytes / 2  # pages are filled, not one a row
    got = [
        (r["symbol"], b["timestamp"])
        for p in pages
        for r in p["results"]
        for b in r["historical"]["bars"]
    ]
    want = [
        (r["symbol"], b["timestamp"]) for r in whole["results"] for b in r["historical"]["bars"]
    ]
    assert len(want) > 2000 and got == want


def test_one_symbol_larger_than_a_page_is_split_across_pages(data_env: Path) -> None:
    settings = GatewaySettings(toolsets="market", page_bytes=8000)
    args = {
        "symbols": [SYMBOLS[0]],
        "kind": "historical",
        "start": "2019-01-01",
        "end": "2020-12-31",
    }

    async def go() -> list[dict[str, Any]]:
        async with Client(build_gateway(settings)) as client:
            return await _fetch_all(client, args)

    pages = anyio.run(go)
    assert len(pages) > 3 and all(answer_size(p) <= 8000 for p in pages)
    stamps = [b["timestamp"] for p in pages for b in p["results"][0]["historical"]["bars"]]
    parts = [part for p in pages for part in p["page"]["parts"]]
    assert len(parts) == len(pages) and parts[-1].endswith(f"of {len(stamps)}")
    assert all(part.startswith("results[0].historical.bars ") for part in parts)
    assert len(stamps) == len(set(stamps)) > 400 and stamps == sorted(stamps)
