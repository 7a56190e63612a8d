"""An operation whose success answer is an image becomes a tool answering MCP image content.

Generic: a tiny service with a PNG route (and an error on it) behind the gateway, called by
an in-process MCP client; nothing here knows the backtest service.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Query
from fastapi.responses import Response
from fastmcp import Client

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from shared.api import install_error_handlers, problem_responses
from shared.errors import NotFoundError

PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}


def png_of(width: int, height: int) -> bytes:
    """Return a real PNG of the given size (matplotlib's writer)."""
    import matplotlib.image
    import numpy as np

    buf = io.BytesIO()
    pixels = np.zeros((height, width, 3))
    pixels[:, : width // 2, 0] = 1.0
    matplotlib.image.imsave(buf, pixels, format="png")
    return buf.getvalue()


def create_plots_app() -> FastAPI:
    """Return a service with one image operation."""
    app = FastAPI(title="Plots")
    install_error_handlers(app)

    @app.get(
        "/plots/{plot_id}/image.png",
        operation_id="get_plot",
        response_class=Response,
        responses={200: PNG, **problem_responses(404)},
    )
    async def get_plot(plot_id: int, width: int = Query(default=40, ge=8, le=400)) -> Response:
        """Draw one plot."""
        if plot_id > 9:
            raise NotFoundError(f"no plot {plot_id}", field="plot_id")
        return Response(png_of(width, 20), media_type="image/png")

    return app


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A gateway over the plots service only (embedded)."""
    package = types.ModuleType("services.plots")
    module = types.ModuleType("services.plots.app")
    module.create_app = create_plots_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "services.plots", package)
    monkeypatch.setitem(sys.modules, "services.plots.app", module)
    specs = tmp_path / "openapi"
    specs.mkdir()
    (specs / "plots.json").write_text(json.dumps(create_plots_app().openapi()), "utf-8")
    return build_gateway(GatewaySettings(spec_dir=specs))


def test_an_image_operation_answers_an_mcp_image(gateway: Any) -> None:
    async def go() -> tuple[Any, Any, Any]:
        async with Client(gateway) as client:
            tools = {t.name: t for t in await client.list_tools()}
            image = await client.call_tool("plots_get_plot", {"plot_id": 3, "width": 64})
            missing = await client.call_tool(
                "plots_get_plot", {"plot_id": 99}, raise_on_error=False
            )
            return tools, image, missing

    tools, image, missing = anyio.run(go)
    import matplotlib.image

    tool = tools["plots_get_plot"]
    assert "limit" not in tool.input_schema["properties"]  # nothing to page in a picture
    assert tool.output_schema is None
    (block,) = image.content
    assert block.type == "image" and block.mime_type == "image/png"
    data = base64.b64decode(block.data)
    assert data == png_of(64, 20)
    assert matplotlib.image.imread(io.BytesIO(data), format="png").shape[:2] == (20, 64)
    assert missing.is_error
    assert "plots service error 404 not_found: no plot 99 (field: plot_id)" in "".join(
        getattr(b, "text", "") for b in missing.content
    )
