"""Strict arguments: an unknown field or query parameter is refused by name, never dropped.

`commission_pct: 0.1` silently running with zero commission, or `?perid=30` answering RSI(14),
are wrong answers that look right. Every request model forbids unknown fields
(`RequestModel`, `extra="forbid"`, so the spec says `additionalProperties: false`); the error
handler names the field and the closest valid one ("unknown argument `perid`; did you mean
`period`?"). Query strings get the same check from `StrictQuery`, which knows each route's
declared query parameters (FastAPI's dependant, sub-dependencies included).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import (
    PROBLEM_MEDIA_TYPE,
    FieldIssue,
    ValidationProblemError,
    unknown_argument_message,
)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are errors (`additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid")


# ---- query strings ----------------------------------------------------------------------


def _query_names(route: APIRoute) -> frozenset[str]:
    """Return the query parameter names route declares, its dependencies' included."""
    names: set[str] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        names.update(p.alias or p.name for p in dependant.query_params)
        stack.extend(dependant.dependencies)
    return frozenset(names)


class StrictQuery:
    """Answer 422 naming any query parameter the matched route does not declare."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._names: dict[int, frozenset[str]] = {}

    def _route(self, scope: Scope) -> APIRoute | None:
        router = getattr(scope.get("app"), "router", None)
        for route in getattr(router, "routes", ()):
            if not isinstance(route, APIRoute):
                continue
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the query string's names against the route's, then serve the request."""
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if not query:
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        if route is not None:
            known = self._names.get(id(route))
            if known is None:
                known = self._names[id(route)] = _query_names(route)
            names = dict.fromkeys(k for k, _ in parse_qsl(query.decode("latin-1"), True))
            unknown = [n for n in names if n not in known]
            if unknown:
                await _refuse(scope, send, unknown, known)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, unknown: list[str], known: frozenset[str]) -> None:
    issues = [FieldIssue(field=n, message=unknown_argument_message(n, known)) for n in unknown]
    error = ValidationProblemError(
        "; ".join(i.message for i in issues), field=unknown[0], errors=issues
    )
    problem = error.to_problem(instance=scope.get("path"))
    body = json.dumps(problem.model_dump(mode="json", exclude_none=True)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- body fields ------------------------------------------------------------------------


def _deref(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(16):
        if not isinstance(schema, dict) or "$ref" not in schema:
            break
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target
    return schema if isinstance(schema, dict) else {}


def _branches(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _deref(schema, root)
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            return [b for item in schema[key] for b in _branches(item, root)]
    return [schema]


def _matching(branches: list[dict[str, Any]], value: Any) -> list[dict[str, Any]]:
    """Keep the union branches whose `const` tags agree with the value sent."""
    if not isinstance(value, dict):
        return branches
    kept = []
    for branch in branches:
        props = branch.get("properties") or {}
        tags = {k: p["const"] for k, p in props.items() if isinstance(p, dict) and "const" in p}
        if all(value.get(k) == v for k, v in tags.items()):
            kept.append(branch)
    return kept or branches


def field_names_at(model: Any, path: list[str | int], body: Any) -> set[str]:
    """Return the field names valid at path (the parent of an unknown field) of a body."""
    try:
        root = TypeAdapter(model).json_schema()
    except Exception:  # not a schema pydantic can describe: no suggestion
        return set()
    nodes = [root]
    value = body
    for part in path:
        nxt: list[dict[str, Any]] = []
        for node in nodes:
            for branch in _matching(_branches(node, root), value):
                if isinstance(part, int):
                    nxt.append(_deref(branch.get("items", {}), root))
                else:
                    prop = (branch.get("properties") or {}).get(part)
                    if prop is not None:
                        nxt.append(prop)
                    elif isinstance(branch.get("additionalProperties"), dict):
                        nxt.append(branch["additionalProperties"])
        nodes = nxt
        if isinstance(value, dict):
            value = value.get(part) if isinstance(part, str) else None
        elif isinstance(value, list) and isinstance(part, int) and -len(value) <= part < len(value):
            value = value[part]
        else:
            value = None
    names: set[str] = set()
    for node in nodes:
        for branch in _matching(_branches(node, root), value):
            names.update((branch.get("properties") or {}).keys())
    return names


def unknown_field_message(scope: Scope, loc: tuple[Any, ...], body: Any) -> str | None:
    """Return "unknown argument `x`; did you mean `y`?" for an extra body field at loc."""
    route = scope.get("route")
    field = getattr(route, "body_field", None)
    if not loc or loc[0] != "body" or field is None:
        return None
    name = str(loc[-1])
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    parent = [p for p in loc[1:-1] if isinstance(p, int | str)]
    # Pydantic puts a union's tag into the location (`strategy.sma_crossover.params`):
    # keep only the segments that are keys or indexes of what the client sent.
    path: list[str | int] = []
    node = body
    for part in parent:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if -len(node) <= part < len(node) else None
    valid = field_names_at(annotation, path, body) if annotation is not None else set()
    return unknown_argument_message(name, valid)
