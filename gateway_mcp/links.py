"""Answers that speak tools: an HTTP operation of a service, named as the tool that calls it.

Services answer links and hints in their own terms (`GET /results/42`, "use POST /train").
Through MCP a model can only call tools, so the gateway names the tool and its arguments
instead: `backtest_get_results(run_id=42)`. The table is read from the service's spec
(path templates and operation ids): nothing here knows a route.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.jobs import cancel_path

_METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"\{([^}/]+)\}")
# "POST /train", "GET /results/{run_id}/chart.png", "`GET /model_info`"
_HTTP_MENTION = re.compile(r"`?\b(GET|POST|PUT|PATCH|DELETE) (/[\w{}./-]*)`?")


@dataclass(frozen=True)
class Operation:
    """One operation of a service's spec, as a tool."""

    tool: str
    method: str
    template: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    params = tuple(_PARAM.findall(template))
    regex = ""
    for i, part in enumerate(_PARAM.split(template)):
        regex += "([^/]+)" if i % 2 else re.escape(part)
    return re.compile(f"^{regex}/?$"), params


class ToolTable:
    """Every operation of one service, to name the tool that a method and path call."""

    def __init__(self, service: str, spec: dict[str, Any], tools: set[str] | None = None):
        self.service = service
        self.operations: list[Operation] = []
        for template, item in spec.get("paths", {}).items():
            for method, op in item.items():
                if method not in _METHODS or not isinstance(op, dict):
                    continue
                op_id = op.get("operationId")
                if not op_id:
                    continue
                tool = f"{service}_{op_id}"
                if tools is not None and tool not in tools:
                    continue
                pattern, params = _compile(template)
                self.operations.append(Operation(tool, method.upper(), template, pattern, params))
        # Literal paths before templated ones (`/results/x/chart.png` before `/results/{id}`).
        self.operations.sort(key=lambda o: (len(o.params), -len(o.template)))

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """Return the operation a method and concrete path call, with its path arguments."""
        for op in self.operations:
            if op.method != method.upper():
                continue
            match = op.pattern.match(path)
            if match:
                return op, {p: unquote(v) for p, v in zip(op.params, match.groups(), strict=True)}
        return None

    def by_template(self, method: str, template: str) -> Operation | None:
        """Return the operation of a method and path template (`/results/{run_id}`)."""
        for op in self.operations:
            if op.method == method.upper() and op.template == template:
                return op
        found = self.find(method, template)
        return found[0] if found else None

    def call(self, method: str, url: str, **extra: Any) -> str | None:
        """Return the tool call for method and url (`backtest_get_results(run_id=42)`)."""
        parts = urlsplit(url)
        path = parts.path
        # A mount prefix (`/backtest/results/42` under `trading serve`) is not the service's.
        found = self.find(method, path) or self.find(method, _strip_mount(path, self.service))
        if found is None:
            return None
        op, args = found
        arguments: dict[str, Any] = {k: _literal(v) for k, v in args.items()}
        arguments.update({k: _literal(v) for k, v in parse_qsl(parts.query)})
        arguments.update(extra)
        return format_call(op.tool, arguments)

    def rewrite_text(self, text: str) -> str:
        """Replace "GET /path" mentions in text by the tool they call, where one does."""

        def swap(match: re.Match[str]) -> str:
            method, path = match.group(1), match.group(2).rstrip(".")
            tail = match.group(2)[len(path) :]
            op = self.by_template(method, path)
            if op is None:
                return match.group(0)
            found = self.find(method, path)
            args = found[1] if found else {}
            concrete = {k: _literal(v) for k, v in args.items() if not v.startswith("{")}
            shown = format_call(op.tool, concrete) if concrete else op.tool
            return f"`{shown}`{tail}"

        return _HTTP_MENTION.sub(swap, text)


def _strip_mount(path: str, service: str) -> str:
    prefix = f"/{service}"
    return path[len(prefix) :] if path.startswith(prefix + "/") else path


def _literal(value: str) -> Any:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def format_call(tool: str, arguments: dict[str, Any]) -> str:
    """Return `tool(a=1, b="x")`, the arguments as JSON values."""
    args = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
    return f"{tool}({args})"


_PATH = re.compile(r"^/[\w{}./%=&?-]*$")
_JOB_KEYS = frozenset({"id", "kind", "status", "progress"})


def speak_tools(data: Any, table: ToolTable, *, wait_s: float) -> Any:
    """Return an answer whose links and hints name tools, not HTTP operations.

    A string that is a service path (`/results/42`) becomes the tool call that reads it; a
    "GET /path" mention in text becomes the tool's name; a job still running gains
    `continue_with`, the `get_job` call that waits for it, and a succeeded one whose result
    is stored elsewhere the call that reads it.
    """
    if isinstance(data, str):
        if _PATH.match(data):
            return table.call("GET", data) or data
        return table.rewrite_text(data) if " /" in data else data
    if isinstance(data, list):
        return [speak_tools(v, table, wait_s=wait_s) for v in data]
    if not isinstance(data, dict):
        return data
    out = {k: speak_tools(v, table, wait_s=wait_s) for k, v in data.items()}
    if set(data) >= _JOB_KEYS and isinstance(data.get("id"), str):
        job_path = f"/jobs/{data['id']}"
        if data.get("status") in ("queued", "running"):
            out.setdefault("continue_with", table.call("GET", job_path, wait_s=wait_s))
            out.setdefault("cancel_with", table.call("POST", cancel_path(job_path)))
        elif data.get("status") == "succeeded" and isinstance(data.get("result_url"), str):
            out.setdefault("continue_with", table.call("GET", data["result_url"]))
    return {k: v for k, v in out.items() if v is not None}
