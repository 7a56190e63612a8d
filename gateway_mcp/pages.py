"""Pages sized by bytes, for answers whose rows are documents (one symbol's bars, ...).

The rows of a multi-symbol answer are not alike: one symbol's twenty years of bars outweigh
a whole page, another's quote is a few hundred bytes. Counting rows cannot size such pages,
so these answers are paged by size: a page holds whole rows while they fit `page_bytes`
(GATEWAY_PAGE_BYTES); a row larger than a page is split along its largest nested list
(`results[3].historical.bars`), and the next page goes on inside it. The answer's `page`
names the call that fetches the next page (the same arguments with `cursor`). Pages cover
every row, and every element of a split row's list, exactly once and in order.

Nothing here knows a route: which tools page this way is read from the answer's schema
(a top-level list of objects that themselves hold a list of objects).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from fastmcp.exceptions import ToolError

from gateway_mcp.results import answer_size, deref_schema, is_type

CURSOR_ARG = "cursor"
CURSOR_DOC = "From the last answer's `page.next`."
PAGING_NOTE = " Paged by size (`page.next`)."
_CURSOR = re.compile(r"^(\d{1,9})(?::(\d{1,12}))?$")
_NESTING = 3  # how deep inside a row its own list is looked for (`historical.bars`: 2)
# Room kept for the text of a page's parts (`results[12].historical.bars 0-199 of 5000`).
_PARTS_ROOM = 320

Path = tuple[str, ...]


# ---- which answers are paged by size (from the answer's JSON schema) ----------------------


def _holds_rows(schema: dict[str, Any], root: dict[str, Any], depth: int) -> bool:
    """Return whether an object schema holds a list of objects within depth levels."""
    for prop in schema.get("properties", {}).values():
        value = deref_schema(prop, root)
        if is_type(value, "array") and is_type(
            deref_schema(value.get("items", {}), root), "object"
        ):
            return True
        if depth > 1 and is_type(value, "object") and _holds_rows(value, root, depth - 1):
            return True
    return False


def schema_has_documents(schema: dict[str, Any] | None, root: dict[str, Any]) -> bool:
    """Return True when answers of this schema have rows that hold rows of their own."""
    if not schema:
        return False
    body = deref_schema(schema, root)
    for prop in body.get("properties", {}).values():
        value = deref_schema(prop, root)
        item = deref_schema(value.get("items", {}), root) if is_type(value, "array") else {}
        if is_type(item, "object") and _holds_rows(item, root, _NESTING):
            return True
    return False


def cursor_argument() -> dict[str, Any]:
    """Return the JSON schema of the `cursor` tool argument."""
    return {"type": "string", "pattern": _CURSOR.pattern, "description": CURSOR_DOC}


# ---- cutting an actual answer ---------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: a row, and how many elements of its split list came before."""

    row: int = 0
    part: int = 0

    @classmethod
    def parse(cls, text: Any) -> Cursor:
        """Return the cursor a `cursor` argument names (`"3"` or `"3:120"`); None is the start."""
        if text is None or text == "":
            return cls()
        match = _CURSOR.match(str(text))
        if match is None:
            raise ToolError(
                f"`{CURSOR_ARG}` {text!r} is not a page cursor; pass the one in the previous "
                "answer's `page.next` call, or none for the first page."
            )
        return cls(int(match.group(1)), int(match.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.row}:{self.part}" if self.part else str(self.row)


def _document_key(data: Any) -> str | None:
    """Return the key of the answer's one top-level list of objects (None: not one)."""
    if not isinstance(data, dict):
        return None
    keys = [
        k for k, v in data.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)
    ]
    return keys[0] if len(keys) == 1 else None


def _lists(item: dict[str, Any], path: Path, depth: int) -> list[Path]:
    out: list[Path] = []
    for key, value in item.items():
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            out.append((*path, key))  # rows only: cutting one column would misalign the rest
        elif isinstance(value, dict) and depth > 1:
            out += _lists(value, (*path, key), depth - 1)
    return out


def largest_list(item: dict[str, Any]) -> Path | None:
    """Return the path of the largest (in bytes) list of objects inside a row, if any."""
    paths = _lists(item, (), _NESTING)
    return max(paths, key=lambda p: answer_size(_at(item, p))) if paths else None


def _at(item: dict[str, Any], path: Path) -> Any:
    for key in path:
        item = item[key]
    return item


def _with_part(item: dict[str, Any], path: Path, start: int, end: int | None) -> dict[str, Any]:
    """Return a copy of item whose list at path holds only its elements start..end."""
    out = copy.copy(item)
    node = out
    for key in path[:-1]:
        node[key] = copy.copy(node[key])
        node = node[key]
    node[path[-1]] = node[path[-1]][start:end]
    return out


def _fitting(item: dict[str, Any], path: Path, start: int, room: int) -> int:
    """Return how many elements of the list at path, from start, fit room bytes with item."""
    skeleton = answer_size(_with_part(item, path, 0, 0))
    sizes = [answer_size(e) + 1 for e in _at(item, path)[start:]]
    return sum(1 for total in accumulate(sizes) if skeleton + total <= room)


@dataclass(frozen=True)
class Split:
    """A row cut along one of its lists: elements start..end of total are on this page."""

    row: int
    path: Path
    start: int
    end: int
    total: int

    def text(self, key: str) -> str:
        """Return `results[3].historical.bars 0-199 of 1250`."""
        where = f"{key}[{self.row}]." + ".".join(self.path)
        return f"{where} {self.start}-{self.end - 1} of {self.total}"


def byte_page(
    data: Any, *, cursor: Cursor, page_bytes: int, next_call: Callable[[str], str]
) -> tuple[Any, dict[str, Any] | None]:
    """Return (one page of data, at most page_bytes, starting at cursor; the `page` object).

    The page object is None when the whole answer fits one page. next_call(cursor) is the
    tool call that fetches the page starting at cursor.
    """
    key = _document_key(data)
    if key is None:
        return data, None
    rows: list[dict[str, Any]] = data[key]
    if cursor.row > len(rows) or (cursor.row == len(rows) and rows):
        raise ToolError(f"`{CURSOR_ARG}` {cursor} is past the answer's {len(rows)} rows.")
    if cursor == Cursor() and answer_size(data) <= page_bytes:
        return data, None

    def info(end: Cursor | None, parts: list[Split]) -> dict[str, Any]:
        last = (end.row if end.part == 0 else end.row + 1) if end else len(rows)
        note = (
            f"Rows {cursor.row}-{max(cursor.row, last - 1)} of {len(rows)} in `{key}`, "
            f"sized to the gateway's {page_bytes:,}-byte page (GATEWAY_PAGE_BYTES)"
        )
        if parts:
            note += "; of rows cut along a list, here: " + ", ".join(
                f"`{p.text(key)}`" for p in parts
            )
        note += f". Call `{next_call(str(end))}` for the next page." if end else ". Last page."
        return {
            "truncated": True,
            "total": len(rows),
            "cursor": str(cursor),
            "next_cursor": str(end) if end else None,
            "next": next_call(str(end)) if end else None,
            "parts": [p.text(key) for p in parts],
            "note": note,
        }

    widest = Cursor(len(rows), 10**12)
    reserve = answer_size({"page": info(widest, [])}) + _PARTS_ROOM
    room = page_bytes - answer_size({**data, key: []}) - reserve
    out: list[dict[str, Any]] = []
    used, parts = 0, []
    row, part = cursor.row, cursor.part
    while row < len(rows):
        item = rows[row]
        path = largest_list(item) if part else None
        piece = _with_part(item, path, part, None) if path else item
        size = answer_size(piece) + 1
        if used + size <= room:
            if path:  # the rest of a row cut on the previous page
                total = len(_at(item, path))
                parts.append(Split(row, path, part, total, total))
            out.append(piece)
            used, row, part = used + size, row + 1, 0
            continue
        if out and size <= room:  # fits a page of its own: the next page starts with it
            break
        path = path or largest_list(item)
        if path is None:  # nothing to split: the row alone (the size check refuses it)
            if not out:
                out.append(item)
                row += 1
            break
        total = len(_at(item, path))
        count = max(_fitting(item, path, part, room - used), 0 if out else 1)
        if count == 0:
            break
        out.append(_with_part(item, path, part, part + count))
        parts.append(Split(row, path, part, part + count, total))
        part += count
        if part >= total:
            row, part = row + 1, 0
        break
    end = Cursor(row, part) if row < len(rows) else None
    return {**data, key: out}, info(end, parts)
