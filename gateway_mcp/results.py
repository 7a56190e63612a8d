"""Answers sized for a model, and upstream errors as tool errors: generic, driven by shape.

Nothing here knows a route. A list in an answer is "rows" when it is the whole answer, a
top-level array of objects (`bars`, `trades`, `results`, ...), or a columnar table (a
top-level array plus a top-level object whose values are arrays of the same length, such as
`timestamps` + `values`). Rows are sliced by `limit`/`offset`, and the answer says how many
were left out and which `offset` fetches the next page. Whatever the shape, no answer grows
past `max_bytes`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastmcp.exceptions import ToolError

from shared.errors import Problem

PAGE_KEY = "page"

LIMIT_DOC = "Most rows per list in the answer."
OFFSET_DOC = "Rows to skip; negative counts from the end (-{default} = the last {default})."


@dataclass(frozen=True)
class Limits:
    """How big an answer may get."""

    default_limit: int = 100
    max_limit: int = 1000
    max_bytes: int = 50_000
    call_budget_s: float = 40.0
    page_bytes: int = 24_000


# --------------------------------------------------------------------------------------
# Shape of an answer, from its JSON schema (decides which tools get limit/offset)
# --------------------------------------------------------------------------------------


def deref_schema(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s and pick the non-null branch of `anyOf`/`oneOf` unions."""
    seen = 0
    while isinstance(schema, dict) and seen < 32:
        seen += 1
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = target
            continue
        for key in ("anyOf", "oneOf"):
            branches = [
                b
                for b in schema.get(key, [])
                if not (isinstance(b, dict) and b.get("type") == "null")
            ]
            if len(branches) == 1:
                schema = branches[0]
                break
        else:
            return schema
    return schema if isinstance(schema, dict) else {}


def is_type(schema: dict[str, Any], kind: str) -> bool:
    """Return whether a JSON schema declares `kind` (an object also by its properties)."""
    declared = schema.get("type")
    if isinstance(declared, list):
        return kind in declared
    if declared is None and kind == "object":
        return "properties" in schema or "additionalProperties" in schema
    return declared == kind


# A list its schema caps at this many items or fewer fits any page: nothing to page.
SHORT_LIST = 50


def _short(array: dict[str, Any]) -> bool:
    """Return whether an array schema caps its length at ``SHORT_LIST`` items or fewer."""
    cap = array.get("maxItems")
    return isinstance(cap, int) and cap <= SHORT_LIST


def schema_has_rows(schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> bool:
    """Return True when answers of this JSON schema can hold rows worth paging.

    root resolves `$ref`s (the whole OpenAPI document for a response schema of a spec).
    """
    if not schema:
        return False
    root = root if root is not None else schema
    body = deref_schema(schema, root)
    if is_type(body, "array"):
        return not _short(body)
    props = {k: deref_schema(v, root) for k, v in body.get("properties", {}).items()}
    arrays = {k: v for k, v in props.items() if is_type(v, "array") and not _short(v)}
    if any(is_type(deref_schema(v.get("items", {}), root), "object") for v in arrays.values()):
        return True
    columns = [
        v
        for v in props.values()
        if is_type(v, "object")
        and isinstance(v.get("additionalProperties"), dict)
        and is_type(deref_schema(v["additionalProperties"], root), "array")
    ]
    return bool(arrays and columns)


def is_object_schema(schema: dict[str, Any] | None, root: dict[str, Any]) -> bool:
    """Return True when answers of this JSON schema are JSON objects (not arrays or scalars)."""
    return bool(schema) and is_type(deref_schema(schema, root), "object")


def paged_output_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the output schema with the optional `page` object the gateway may add."""
    if not schema or not is_type(schema, "object"):
        return schema
    out = copy.deepcopy(schema)
    out.setdefault("properties", {})[PAGE_KEY] = {
        "type": "object",
        "description": "Present when rows were left out: totals per list and the next offset.",
        "additionalProperties": True,
    }
    return out


def page_arguments(limits: Limits) -> dict[str, dict[str, Any]]:
    """Return the JSON schemas of the `limit` and `offset` tool arguments."""
    return {
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": limits.max_limit,
            "default": limits.default_limit,
            "description": LIMIT_DOC.format(default=limits.default_limit, max=limits.max_limit),
        },
        "offset": {
            "type": "integer",
            "default": 0,
            "description": OFFSET_DOC.format(default=limits.default_limit),
        },
    }


# --------------------------------------------------------------------------------------
# Slicing an actual answer
# --------------------------------------------------------------------------------------


def _row_lists(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Return (keys of top-level row lists, keys of top-level column dicts) of an answer."""
    lists = [k for k, v in data.items() if isinstance(v, list)]
    row_keys = [k for k in lists if data[k] and all(isinstance(x, dict) for x in data[k])]
    index_lengths = {len(data[k]) for k in lists if k not in row_keys}
    column_keys = [
        k
        for k, v in data.items()
        if isinstance(v, dict)
        and v
        and all(isinstance(c, list) for c in v.values())
        and {len(c) for c in v.values()} <= index_lengths
    ]
    if column_keys:
        column_len = {len(c) for k in column_keys for c in data[k].values()}
        row_keys += [k for k in lists if k not in row_keys and len(data[k]) in column_len]
    return row_keys, column_keys


def _window(total: int, limit: int, offset: int) -> tuple[int, int]:
    start = max(0, total + offset) if offset < 0 else min(offset, total)
    return start, min(total, start + limit)


@dataclass(frozen=True)
class Page:
    """Which rows of an answer were kept."""

    totals: dict[str, int]
    start: int
    returned: int
    limit: int

    @property
    def total(self) -> int:
        """Return the length of the longest row list."""
        return max(self.totals.values())

    @property
    def cut(self) -> bool:
        """Return True when rows were left out."""
        return self.start > 0 or self.returned < self.total

    def info(self, *, byte_limit: int | None = None) -> dict[str, Any]:
        """Return the `page` object added to an answer: totals, what was kept, how to go on."""
        total, start, end = self.total, self.start, self.start + self.returned
        next_offset = end if end < total else None
        lists = ", ".join(f"`{k}`" for k in self.totals)
        note = f"Rows {start}-{max(start, end - 1)} of {total} in {lists}"
        note += f"; {total - self.returned} left out."
        if next_offset is not None:
            note += f" Call again with offset={next_offset} for the next rows"
            note += f", or offset=-{self.limit} for the last {self.limit}."
        else:
            note += " This is the last page; a smaller offset gives earlier rows."
        if byte_limit is not None:
            note += f" Page cut to fit the gateway's {byte_limit:,}-byte answer limit."
        return {
            "truncated": True,
            "total": total,
            "returned": self.returned,
            "offset": start,
            "limit": self.limit,
            "next_offset": next_offset,
            "totals": self.totals,
            "note": note,
        }


def slice_rows(data: Any, *, limit: int, offset: int = 0) -> tuple[Any, Page | None]:
    """Return (answer with every row list cut to one page, the page; None without rows)."""
    if isinstance(data, list):
        start, end = _window(len(data), limit, offset)
        return data[start:end], Page({"result": len(data)}, start, end - start, limit)
    if not isinstance(data, dict):
        return data, None
    row_keys, column_keys = _row_lists(data)
    if not row_keys and not column_keys:
        return data, None
    totals = {k: len(data[k]) for k in row_keys}
    totals.update({k: max(len(c) for c in data[k].values()) for k in column_keys})
    start, end = _window(max(totals.values()), limit, offset)
    out = dict(data)
    for k in row_keys:
        out[k] = data[k][start:end]
    for k in column_keys:
        out[k] = {name: column[start:end] for name, column in data[k].items()}
    return out, Page(totals, start, end - start, limit)


def answer_size(data: Any) -> int:
    """Return the size in bytes of an answer as compact JSON (what the model reads)."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def fit_rows(
    data: Any, *, limit: int, offset: int, max_bytes: int
) -> tuple[Any, dict[str, Any] | None]:
    """Slice rows to one page, shrink the page until it fits max_bytes; return (data, page)."""

    def measure(out: Any, page: Page | None) -> int:
        size = answer_size(out)
        if page is not None and page.cut:  # room for the `page` object the answer will carry
            size += answer_size(page.info(byte_limit=max_bytes)) + len(PAGE_KEY) + 4
        return size

    out, page = slice_rows(data, limit=limit, offset=offset)
    size = measure(out, page)
    shrunk = False
    while size > max_bytes and page is not None and page.returned > 1:
        limit = max(1, min(page.returned - 1, int(page.returned * max_bytes / size * 0.95)))
        out, page = slice_rows(data, limit=limit, offset=offset)
        size, shrunk = measure(out, page), True
    if page is None or not page.cut:
        return out, None
    return out, page.info(byte_limit=max_bytes if shrunk else None)


def oversize_error(
    tool: str, size: int, max_bytes: int, arguments: Sequence[str] = ()
) -> ToolError:
    """Return the error for an answer that cannot be cut below the byte limit.

    arguments are the tool's own; those that bound an answer's size are named.
    """
    sizing = [a for a in sorted(arguments) if a == "limit" or a.endswith("_points")]
    smaller = " or ".join(f"a smaller `{a}`" for a in sizing) or "a smaller `limit`"
    return ToolError(
        f"The answer of {tool} is {size:,} bytes, over the gateway's {max_bytes:,}-byte limit "
        "(GATEWAY_MAX_ANSWER_BYTES). Ask for less: a shorter date range, fewer symbols or "
        f"indicators, or {smaller}."
    )


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def problem_error(service: str, problem: Problem) -> ToolError:
    """Return a tool error naming the service and carrying status, code and detail."""
    message = f"{service} service error {problem.status} {problem.code}: {problem.detail}"
    if problem.field:
        message += f" (field: {problem.field})"
    if problem.error_id:  # what to quote: the service logged the details under it
        message += f" (error id: {problem.error_id})"
    server_side = problem.status >= 500
    return ToolError(message, log_level=logging.WARNING if server_side else logging.DEBUG)
