"""A path argument is one path segment: a tool argument holding `/` (raw or encoded) cannot
steer a call to another route of the service."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from shared.api import install_error_handlers
from tests.unit.gateway.test_server import call_tools, text, write_specs


def create_notes_app() -> FastAPI:
    """A service with a public note route and, below it, a route the tool must not reach."""
    app = FastAPI(title="Notes")
    install_error_handlers(app)

    @app.get("/notes/{name}", operation_id="get_note")
    async def get_note(name: str) -> dict[str, str]:
        """Return a note."""
        return {"note": name}

    @app.get("/notes/{name}/secret", operation_id="get_secret", tags=["internal"])
    async def get_secret(name: str) -> dict[str, str]:
        """Not a tool (tag internal): reachable only by steering get_note's path."""
        return {"secret": "steered"}

    return app


def test_a_path_argument_with_a_slash_is_refused_naming_it(tmp_path: Path) -> None:
    specs = write_specs(tmp_path / "openapi", notes=create_notes_app())
    settings = GatewaySettings(mode="embedded", spec_dir=specs)
    gateway = build_gateway(settings, app_factories={"notes": create_notes_app})
    (steered,) = call_tools(gateway, ("notes_get_note", {"name": "x/secret"}))
    assert "steered" not in text(steered)
    assert steered.is_error
    assert "`name` is one path segment" in text(steered)


@pytest.mark.parametrize("name", ["x%2Fsecret", "x%252Fsecret", "x\\secret"])
def test_an_encoded_slash_is_passed_on_as_text(tmp_path: Path, name: str) -> None:
    specs = write_specs(tmp_path / "openapi", notes=create_notes_app())
    settings = GatewaySettings(mode="embedded", spec_dir=specs)
    gateway = build_gateway(settings, app_factories={"notes": create_notes_app})
    (answer,) = call_tools(gateway, ("notes_get_note", {"name": name}))
    assert answer.structured_content == {"note": name}  # the same text, one segment


def test_an_ordinary_path_argument_is_passed_on(tmp_path: Path) -> None:
    specs = write_specs(tmp_path / "openapi", notes=create_notes_app())
    settings = GatewaySettings(mode="embedded", spec_dir=specs)
    gateway = build_gateway(settings, app_factories={"notes": create_notes_app})
    (answer,) = call_tools(gateway, ("notes_get_note", {"name": "BRK.B ^GSPC"}))
    assert not answer.is_error, text(answer)
    assert answer.structured_content == {"note": "BRK.B ^GSPC"}
