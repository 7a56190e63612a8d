"""Gateway tools: the spec's tools, with upstream errors mapped and answers sized for a model.

FastMCP's OpenAPI provider (the one `FastMCP.from_openapi` uses) builds one tool per
operation: name, description and argument schema from the spec. `GatewayTool` wraps each:
it adds `limit`/`offset` to tools whose answers hold rows (or that run jobs), delegates the
HTTP call to the wrapped tool, turns a problem answer into a tool error that names the
service, and caps the answer's size.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import httpx2
from fastmcp.exceptions import ToolError
from fastmcp.server.transforms import GetToolNext, Transform
from fastmcp.tools.base import Tool, ToolResult
from fastmcp.utilities.openapi import HTTPRoute
from fastmcp.utilities.tasks import TaskConfig
from fastmcp.utilities.versions import VersionSpec
from mcp_types import ToolAnnotations
from pydantic import PrivateAttr

from gateway_mcp.results import (
    PAGE_KEY,
    Limits,
    answer_size,
    fit_rows,
    oversize_error,
    page_arguments,
    paged_output_schema,
    problem_error,
    schema_has_rows,
)
from shared.errors import parse_problem

PAGING_NOTE = (
    "\n\nLong lists in the answer are cut to `limit` rows (default {default}); the answer's "
    "`page` then gives the totals and the `offset` of the next page."
)
JOB_NOTE = "\n\nRuns as a job: the gateway waits for it to finish and reports progress meanwhile."


def is_job_route(route: HTTPRoute) -> bool:
    """Return True when the operation declares a `202 Accepted` (job) answer."""
    return "202" in (route.responses or {})


class GatewayTool(Tool):
    """A tool of one service, called through the gateway's rules."""

    task_config: TaskConfig = TaskConfig(mode="forbidden")
    _inner: Tool = PrivateAttr()
    _service: str = PrivateAttr()
    _limits: Limits = PrivateAttr()
    _paged: bool = PrivateAttr(default=False)
    _wrapped: bool = PrivateAttr(default=False)

    @classmethod
    def wrap(cls, inner: Tool, route: HTTPRoute, service: str, limits: Limits) -> GatewayTool:
        """Return inner with paging arguments (when useful) and gateway error handling."""
        job = is_job_route(route)
        output_schema = None if job else inner.output_schema
        parameters = copy.deepcopy(inner.parameters)
        props = parameters.setdefault("properties", {})
        paged = (job or schema_has_rows(output_schema)) and not ({"limit", "offset"} & set(props))
        description = inner.description or ""
        if paged:
            props.update(page_arguments(limits))
            output_schema = paged_output_schema(output_schema)
            description += PAGING_NOTE.format(default=limits.default_limit)
        if job:
            description += JOB_NOTE
        annotations = inner.annotations
        if annotations is None and route.method.upper() == "GET":
            annotations = ToolAnnotations(read_only_hint=True, idempotent_hint=True)
        tool = cls(
            name=inner.name,
            title=inner.title or route.summary,
            description=description,
            parameters=parameters,
            output_schema=output_schema,
            annotations=annotations,
            tags=set(inner.tags),
            meta=inner.meta,
        )
        tool._inner = inner
        tool._service = service
        tool._limits = limits
        tool._paged = paged
        schema = inner.output_schema or {}
        tool._wrapped = bool(schema.get("x-fastmcp-wrap-result"))
        return tool

    def _page_args(self, arguments: dict[str, Any]) -> tuple[int, int]:
        limits = self._limits
        limit, offset = arguments.pop("limit", None), arguments.pop("offset", None)
        try:
            limit = limits.default_limit if limit is None else int(limit)
            offset = 0 if offset is None else int(offset)
        except (TypeError, ValueError) as e:
            raise ToolError(f"`limit` and `offset` must be integers ({e})") from e
        return max(1, min(limit, limits.max_limit)), offset

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """Call the service; map its errors; cut rows and size to the gateway's limits."""
        args = dict(arguments)
        if self._paged:
            limit, offset = self._page_args(args)
        try:
            result = await self._inner.run(args)
        except httpx2.HTTPStatusError as e:
            response = e.response
            problem = parse_problem(response.status_code, response.content, response.reason_phrase)
            raise problem_error(self._service, problem) from e
        except ValueError as e:  # the request could not be built from the arguments
            raise ToolError(f"{self._service} service: {e}") from e
        data = result.structured_content
        if data is None:  # not JSON: pass text through, within the size limit
            size = sum(len(getattr(c, "text", "") or "") for c in result.content)
            if size > self._limits.max_bytes:
                raise oversize_error(self.name, size, self._limits.max_bytes)
            return result
        if self._wrapped:
            data = data.get("result")
        page = None
        if self._paged:
            data, page = fit_rows(
                data, limit=limit, offset=offset, max_bytes=self._limits.max_bytes
            )
        answer = {"result": data} if self._wrapped or not isinstance(data, dict) else data
        if page is not None:
            answer = {**answer, PAGE_KEY: page}
        size = answer_size(answer)
        if size > self._limits.max_bytes:
            raise oversize_error(self.name, size, self._limits.max_bytes)
        return ToolResult(structured_content=answer)


class GatewayTools(Transform):
    """Serve each of a provider's tools as its GatewayTool (built once, looked up by name)."""

    def __init__(self, tools: dict[str, GatewayTool]) -> None:
        self._tools = tools

    def __repr__(self) -> str:
        return f"GatewayTools({sorted(self._tools)!r})"

    async def list_tools(self, tools: Sequence[Tool]) -> Sequence[Tool]:
        """Replace every tool by its gateway version."""
        return [self._tools.get(t.name, t) for t in tools]

    async def get_tool(
        self, name: str, call_next: GetToolNext, *, version: VersionSpec | None = None
    ) -> Tool | None:
        """Return the gateway version of a tool."""
        tool = await call_next(name, version=version)
        if tool is None:
            return None
        return self._tools.get(tool.name, tool)
