"""Gateway tools: the spec's tools, with upstream errors mapped and answers sized for a model.

FastMCP's OpenAPI provider (the one `FastMCP.from_openapi` uses) builds one tool per
operation: name, description and argument schema from the spec. `gateway_tool` transforms
each through fastmcp's public tool-transformation API (`Tool.from_tool` with a function that
calls the generated tool by `forward_raw`): it adds `limit`/`offset` to tools whose answers
hold rows (or that run jobs), turns a problem answer into a tool error that names the
service, and caps the answer's size. What an answer looks like is read from the service's
own spec, never from fastmcp's internal schema markers.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx2
from fastmcp.exceptions import ToolError
from fastmcp.server.transforms import GetToolNext, Transform
from fastmcp.tools import Tool
from fastmcp.tools.base import ToolResult
from fastmcp.tools.tool_transform import forward_raw
from fastmcp.utilities.openapi import HTTPRoute
from fastmcp.utilities.versions import VersionSpec
from mcp_types import ImageContent, ToolAnnotations

from gateway_mcp.context import (
    TOOL_DOCS_URI,
    compact_schema,
    first_paragraph,
    optional_nulls,
    strict_schema,
)
from gateway_mcp.jobs import CALL_DEADLINE
from gateway_mcp.links import ToolTable, format_call, speak_tools
from gateway_mcp.numbers import round_numbers
from gateway_mcp.pages import (
    CURSOR_ARG,
    Cursor,
    byte_page,
    cursor_argument,
    schema_has_documents,
)
from gateway_mcp.pages import PAGING_NOTE as BYTE_PAGING_NOTE
from gateway_mcp.results import (
    PAGE_KEY,
    Limits,
    answer_size,
    fit_rows,
    is_object_schema,
    oversize_error,
    page_arguments,
    paged_output_schema,
    problem_error,
    schema_has_rows,
)
from shared.errors import parse_problem, unknown_argument_message

# Paging and jobs are explained once, in the server's instructions (`guide.INSTRUCTIONS`).
PAGING_NOTE = " Paged (`limit`, `offset`)."
JOB_NOTE = " Long runs answer a job (`continue_with`)."
# A route's own model-visible description (instead of its docstring's first paragraph), for
# what a model must see to call the tool well: e.g. a language's compact grammar.
DESCRIPTION_EXTENSION = "x-mcp-description"
JSON_MEDIA = "application/json"


def is_job_route(route: HTTPRoute, spec: dict[str, Any] | None = None) -> bool:
    """Return True when the operation declares a `202 Accepted` (job) answer.

    Read from the spec when given: fastmcp's route keeps only the first success answer, so
    an operation answering 200 (quick) or 202 (a job) looks like a 200-only one there.
    """
    if spec is not None:
        operation = spec.get("paths", {}).get(route.path, {}).get(route.method.lower(), {})
        if "202" in {str(code) for code in operation.get("responses", {})}:
            return True
    return "202" in (route.responses or {})


def response_schema(spec: dict[str, Any], route: HTTPRoute) -> dict[str, Any] | None:
    """Return the JSON schema of the operation's success answer, as its spec declares it."""
    operation = spec.get("paths", {}).get(route.path, {}).get(route.method.lower(), {})
    responses = operation.get("responses", {})
    for status in sorted(code for code in responses if str(code).startswith("2")):
        schema = responses[status].get("content", {}).get(JSON_MEDIA, {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return None


def image_media_type(spec: dict[str, Any], route: HTTPRoute) -> str | None:
    """Return the image media type (`image/png`, ...) of an operation whose success answer
    is an image and not JSON, else None."""
    operation = spec.get("paths", {}).get(route.path, {}).get(route.method.lower(), {})
    for status, answer in sorted(operation.get("responses", {}).items()):
        if not str(status).startswith("2"):
            continue
        content = answer.get("content", {})
        images = [m for m in content if str(m).startswith("image/")]
        if images and JSON_MEDIA not in content:
            return str(images[0])
    return None


def _image_request(route: HTTPRoute, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return (path, query) of an image operation called with the tool's arguments."""
    path, query = route.path, {}
    for name, value in arguments.items():
        if value is None:
            continue
        where = route.parameter_map.get(name, {"location": "query", "openapi_name": name})
        original = where.get("openapi_name", name)
        if where.get("location") == "path":
            path = path.replace("{" + original + "}", quote(str(value), safe=""))
        elif where.get("location") == "query":
            query[original] = value
    return path, query


def check_path_arguments(route: HTTPRoute, service: str, arguments: dict[str, Any]) -> None:
    """Refuse a path argument holding `/`: it would reach another route of the service.

    The request encodes every path argument (`/` as `%2F`), but a service decodes the path
    before routing, so `get_results(run_id="<id>/chart.png")` would be the chart route.
    """
    for name, value in arguments.items():
        where = route.parameter_map.get(name, {})
        if where.get("location") == "path" and "/" in str(value):
            original = where.get("openapi_name", name)
            raise ToolError(
                f"{service} service: `{original}` is one path segment and may not contain '/'"
            )


def _service_client(service: str) -> httpx2.AsyncClient:
    """Return the service's HTTP client from the running gateway's lifespan context."""
    from fastmcp.server.dependencies import get_context

    services = get_context().lifespan_context.get("services", {})
    if service not in services:
        raise ToolError(f"{service} service is not part of this gateway")
    client: httpx2.AsyncClient = services[service].client
    return client


async def _image_result(
    client: httpx2.AsyncClient, route: HTTPRoute, service: str, arguments: dict[str, Any]
) -> ToolResult:
    """Call an image operation; return the image as MCP image content (errors as problems)."""
    path, query = _image_request(route, arguments)
    response = await client.request(route.method.upper(), path, params=query)
    if response.is_error:
        problem = parse_problem(response.status_code, response.content, response.reason_phrase)
        raise problem_error(service, problem)
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if not media.startswith("image/"):
        raise ToolError(f"{service} service answered {media or 'nothing'}, not an image")
    data = base64.b64encode(response.content).decode()
    return ToolResult(content=[ImageContent(type="image", data=data, mime_type=media)])


def _page_args(arguments: dict[str, Any], limits: Limits) -> tuple[int, int]:
    limit, offset = arguments.pop("limit", None), arguments.pop("offset", None)
    try:
        limit = limits.default_limit if limit is None else int(limit)
        offset = 0 if offset is None else int(offset)
    except (TypeError, ValueError) as e:
        raise ToolError(f"`limit` and `offset` must be integers ({e})") from e
    return max(1, min(limit, limits.max_limit)), offset


def gateway_tool(
    inner: Tool,
    route: HTTPRoute,
    service: str,
    limits: Limits,
    spec: dict[str, Any],
    client: httpx2.AsyncClient | None = None,
    docs: dict[str, dict[str, Any]] | None = None,
    table: ToolTable | None = None,
) -> Tool:
    """Return inner with paging arguments (when useful), mapped errors and sized answers.

    An operation whose success answer is an image (e.g. `image/png`) is called through
    client (default: the service's client in the gateway's lifespan context) and answered
    as MCP image content, which a model sees as a picture.

    The model sees a compact description and argument schema (`gateway_mcp.context`); the
    full ones go to docs under the tool's public name, for the `docs://tools/{name}` resource.
    An argument the tool does not take is refused by name, with the closest one it does.
    """
    image = image_media_type(spec, route)
    job = is_job_route(route, spec)
    body = None if job or image else response_schema(spec, route)
    # fastmcp answers a non-object body as {"result": <body>}; the gateway keeps that shape.
    wrapped = body is not None and not is_object_schema(body, spec)
    parameters = copy.deepcopy(inner.parameters)
    props = parameters.setdefault("properties", {})
    # Rows that are documents (a symbol's bars) are paged by size, other rows by count.
    by_size = schema_has_documents(body, spec) and CURSOR_ARG not in props
    paged = (
        not image
        and not by_size
        and (job or schema_has_rows(body, spec))
        and not ({"limit", "offset"} & set(props))
    )
    output_schema = None if job or image else optional_nulls(inner.output_schema)
    full_description = inner.description or ""
    if paged:
        props.update(page_arguments(limits))
    if by_size:
        props[CURSOR_ARG] = cursor_argument()
    if paged or by_size:
        output_schema = paged_output_schema(output_schema)
    public_name = f"{service}_{inner.name}"
    where = TOOL_DOCS_URI.format(name=public_name)
    declared_description = route.extensions.get(DESCRIPTION_EXTENSION)
    if isinstance(declared_description, str) and declared_description:
        description = declared_description
    else:
        description = first_paragraph(full_description)
    if paged:
        description += PAGING_NOTE
    if by_size:
        description += BYTE_PAGING_NOTE
    if job:
        description += JOB_NOTE
    if docs is not None:
        docs[public_name] = {
            "name": public_name,
            "description": full_description,
            "input_schema": strict_schema(parameters),
        }
    known = set(props)
    # A service may default an argument differently for a model (`x-mcp-default`): e.g. no
    # equity curve in a backtest answer unless asked.
    mcp_defaults = {}
    for name, prop in props.items():
        if isinstance(prop, dict) and "x-mcp-default" in prop:
            mcp_defaults[name] = prop["x-mcp-default"]
            prop["default"] = prop.pop("x-mcp-default")
    parameters = strict_schema(compact_schema(parameters, where))
    table = table or ToolTable(service, spec)
    wait_s = round(max(0.5, min(30.0, limits.call_budget_s * 0.75)), 1)
    annotations = inner.annotations
    declared = route.extensions.get("x-mcp-annotations")  # the service's own hints win
    if annotations is None and isinstance(declared, dict):
        annotations = ToolAnnotations.model_validate(declared)
    elif annotations is None and route.method.upper() == "GET":
        annotations = ToolAnnotations(read_only_hint=True, idempotent_hint=True)

    async def call(**arguments: Any) -> ToolResult:
        """Call the service within the call budget; answer compactly, in tools' terms."""
        token = CALL_DEADLINE.set(time.monotonic() + limits.call_budget_s)
        try:
            return await answer(dict(arguments))
        finally:
            CALL_DEADLINE.reset(token)

    async def answer(args: dict[str, Any]) -> ToolResult:
        """Call the service; map its errors; cut rows and size to the gateway's limits."""
        for name in args:
            if name not in known:
                raise ToolError(unknown_argument_message(name, known))
        check_path_arguments(route, service, args)
        for name, value in mcp_defaults.items():
            args.setdefault(name, value)
        if image:
            return await _image_result(client or _service_client(service), route, service, args)
        limit, offset = _page_args(args, limits) if paged else (0, 0)
        cursor = Cursor.parse(args.pop(CURSOR_ARG, None)) if by_size else Cursor()
        asked = {k: v for k, v in args.items() if v is not None}
        try:
            result = await forward_raw(**args)
        except httpx2.HTTPStatusError as e:
            response = e.response
            problem = parse_problem(response.status_code, response.content, response.reason_phrase)
            problem.detail = table.rewrite_text(problem.detail)
            raise problem_error(service, problem) from e
        except ValueError as e:  # the request could not be built from the arguments
            raise ToolError(f"{service} service: {e}") from e
        data = result.structured_content
        if data is None:  # not JSON: pass text through, within the size limit
            size = sum(len(getattr(c, "text", "") or "") for c in result.content)
            if size > limits.max_bytes:
                raise oversize_error(inner.name, size, limits.max_bytes, sorted(known))
            return result
        answer_data: Any = data.get("result") if wrapped else data
        answer_data = round_numbers(speak_tools(answer_data, table, wait_s=wait_s))
        page = None
        if paged:
            answer_data, page = fit_rows(
                answer_data, limit=limit, offset=offset, max_bytes=limits.max_bytes
            )
        if by_size:
            answer_data, page = byte_page(
                answer_data,
                cursor=cursor,
                page_bytes=limits.page_bytes,
                next_call=lambda at: format_call(public_name, {**asked, CURSOR_ARG: at}),
            )
        body = (
            {"result": answer_data} if wrapped or not isinstance(answer_data, dict) else answer_data
        )
        if page is not None:
            body = {**body, PAGE_KEY: page}
        size = answer_size(body)
        if size > limits.max_bytes:
            raise oversize_error(inner.name, size, limits.max_bytes, sorted(known))
        return ToolResult(structured_content=body)

    tool = Tool.from_tool(
        inner,
        transform_fn=call,
        title=inner.title or route.summary,
        description=description,
        output_schema=output_schema,
        annotations=annotations,
    )
    # The transformed tool takes the parent's arguments (through **arguments) plus paging.
    return tool.model_copy(update={"parameters": parameters})


class GatewayTools(Transform):
    """Serve each of a provider's tools as its gateway tool (built once, looked up by name)."""

    def __init__(self, tools: dict[str, Tool]) -> None:
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
