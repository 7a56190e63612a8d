"""The gateway in-process: tools from specs, paging, errors, services down, remote mode."""

from __future__ import annotations

import json
import shutil
import sys
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastmcp import Client
from pydantic import BaseModel, SecretStr

from gateway_mcp.server import build_gateway
from gateway_mcp.settings import GatewaySettings
from services.market.app import create_app as create_market_app
from services.market.settings import SHARED_CSV_DIR
from shared.api import install_error_handlers, problem_responses
from shared.errors import NotFoundError
from tests.conftest import market_settings
from trading.cli import free_port, serve_in_thread
from trading.openapi import OPENAPI_DIR


class Widget(BaseModel):
    id: int
    name: str


def create_widgets_app(*, fail_startup: bool = False) -> FastAPI:
    """Return a tiny service that did not exist when the gateway was written."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if fail_startup:
            raise RuntimeError("widget store offline")
        yield

    app = FastAPI(title="Widgets", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/widgets", operation_id="list_widgets", response_model=list[Widget])
    async def list_widgets() -> list[dict[str, Any]]:
        """Return every widget."""
        return [{"id": i, "name": f"w{i}"} for i in range(150)]

    @app.get(
        "/widgets/{widget_id}",
        operation_id="get_widget",
        response_model=Widget,
        responses=problem_responses(404),
        summary="One widget",
    )
    async def get_widget(widget_id: int) -> dict[str, Any]:
        """Return one widget by id."""
        if widget_id >= 150:
            raise NotFoundError(f"no widget {widget_id}")
        return {"id": widget_id, "name": f"w{widget_id}"}

    @app.get("/widgets/{widget_id}/blob", operation_id="get_widget_blob")
    async def get_widget_blob(widget_id: int) -> dict[str, str]:
        """Return a widget's (large) blob."""
        return {"blob": "x" * 80_000}

    @app.get("/health", operation_id="health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    @app.get("/metrics", operation_id="get_metrics")
    async def metrics() -> dict[str, int]:
        """Prometheus-style counters."""
        return {"requests": 1}

    return app


def write_specs(directory: Path, **extra: FastAPI) -> Path:
    """Write market.json (the committed one) plus one spec per extra app into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(OPENAPI_DIR / "market.json", directory / "market.json")
    for name, app in extra.items():
        (directory / f"{name}.json").write_text(json.dumps(app.openapi()), encoding="utf-8")
    return directory


def market_factory(tmp_path: Path) -> Callable[[], FastAPI]:
    return lambda: create_market_app(market_settings(tmp_path, SHARED_CSV_DIR))


def call_tools(gateway: Any, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Connect an in-process MCP client (runs the gateway lifespan) and call each tool."""

    async def go() -> list[Any]:
        async with Client(gateway) as client:
            return [await client.call_tool(n, a, raise_on_error=False) for n, a in calls]

    return anyio.run(go)


def tool_names(gateway: Any) -> set[str]:
    return {t.name for t in anyio.run(gateway.list_tools)}


def text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
def register_widgets(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make `services.widgets.app:create_app` importable, as a new service would be."""

    def register(name: str = "widgets", **kwargs: Any) -> None:
        package = types.ModuleType(f"services.{name}")
        module = types.ModuleType(f"services.{name}.app")
        module.create_app = lambda: create_widgets_app(**kwargs)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"services.{name}", package)
        monkeypatch.setitem(sys.modules, f"services.{name}.app", module)

    return register


# ------------------------------------------------------------------------------------------


def test_a_new_spec_file_adds_its_tools_without_gateway_changes(
    tmp_path: Path, register_widgets: Callable[..., None]
) -> None:
    register_widgets()
    specs = write_specs(tmp_path / "openapi", widgets=create_widgets_app())
    gateway = build_gateway(
        GatewaySettings(spec_dir=specs), app_factories={"market": market_factory(tmp_path)}
    )

    names = tool_names(gateway)
    assert {"widgets_list_widgets", "widgets_get_widget", "widgets_get_widget_blob"} <= names
    assert "market_get_price" in names
    assert not {n for n in names if n.endswith(("health", "metrics"))}  # ops routes excluded

    listed, one, missing, blob, price = call_tools(
        gateway,
        ("widgets_list_widgets", {"limit": 20, "offset": 40}),
        ("widgets_get_widget", {"widget_id": 7}),
        ("widgets_get_widget", {"widget_id": 999}),
        ("widgets_get_widget_blob", {"widget_id": 1}),
        ("market_get_price", {"symbol": "AAPL"}),
    )
    assert [w["id"] for w in listed.structured_content["result"]] == list(range(40, 60))
    assert listed.structured_content["page"]["total"] == 150
    assert listed.structured_content["page"]["next_offset"] == 60
    assert one.structured_content == {"id": 7, "name": "w7"}
    assert missing.is_error
    assert text(missing) == "widgets service error 404 not_found: no widget 999"
    assert blob.is_error
    assert "over the gateway's 50,000-byte limit" in text(blob)
    assert price.structured_content["timestamp"].startswith("2023-10-27")


def test_tool_metadata_comes_from_the_spec(tmp_path: Path) -> None:
    gateway = build_gateway(GatewaySettings(mode="remote", spec_dir=OPENAPI_DIR))
    tools = {t.name: t for t in anyio.run(gateway.list_tools)}
    hist = tools["market_get_historical"].to_mcp_tool()
    assert hist.title == "Historical OHLCV bars"
    assert hist.description.startswith("Return OHLCV bars between `start` and `end`")
    props = hist.input_schema["properties"]
    assert {"symbol", "start", "end", "interval", "adjusted", "fill_gaps"} <= set(props)
    assert props["limit"]["type"] == props["offset"]["type"] == "integer"
    # Paging arguments are described (default, bounds) once per service, in its first tool.
    first = tools["market_get_features"].to_mcp_tool().input_schema["properties"]
    assert first["limit"]["default"] == 100 and first["offset"]["default"] == 0
    # Many symbols at once are paged by size, not by rows (gateway_mcp.pages).
    bulk = tools["market_bulk_fetch"].to_mcp_tool().input_schema["properties"]
    assert "cursor" in bulk and "limit" not in bulk
    assert "page" in hist.output_schema["properties"]
    assert hist.annotations.read_only_hint is True
    price = tools["market_get_price"].to_mcp_tool()
    assert "limit" not in price.input_schema["properties"]  # one quote: nothing to page


def test_list_results_are_capped_and_say_how_to_page(tmp_path: Path) -> None:
    gateway = build_gateway(
        GatewaySettings(spec_dir=OPENAPI_DIR), app_factories={"market": market_factory(tmp_path)}
    )
    default, last, indicators = call_tools(
        gateway,
        ("market_get_historical", {"symbol": "AAPL", "start": "2020-01-01"}),
        ("market_get_historical", {"symbol": "AAPL", "start": "2020-01-01", "offset": -3}),
        ("market_get_indicators", {"symbol": "AAPL", "start": "2010-01-01", "limit": 1000}),
    )
    body = default.structured_content
    assert len(body["bars"]) == 100
    assert body["bars"][0]["timestamp"].startswith("2020-01-02")
    assert body["page"]["truncated"] is True and body["page"]["next_offset"] == 100
    assert body["page"]["total"] > 900 and body["page"]["totals"] == {"bars": body["page"]["total"]}

    last_bars = last.structured_content["bars"]  # offset -3: the last three bars
    assert [b["timestamp"][:10] for b in last_bars] == ["2023-10-25", "2023-10-26", "2023-10-27"]
    assert last.structured_content["page"]["next_offset"] is None

    table = indicators.structured_content
    assert len(text(indicators).encode()) <= 50_000
    n = len(table["timestamps"])
    assert 0 < n < 1000 and all(len(v) == n for v in table["values"].values())
    assert "byte answer limit" in table["page"]["note"]


def test_upstream_problems_become_tool_errors(tmp_path: Path) -> None:
    gateway = build_gateway(
        GatewaySettings(spec_dir=OPENAPI_DIR), app_factories={"market": market_factory(tmp_path)}
    )
    bad, unknown, bad_range = call_tools(
        gateway,
        ("market_get_price", {"symbol": "BAD!!"}),
        ("market_get_price", {"symbol": "ZZZZZZ"}),
        ("market_get_historical", {"symbol": "AAPL", "start": "2023-01-01", "end": "2022-01-01"}),
    )
    assert bad.is_error and text(bad).startswith("market service error 422 validation_error:")
    assert text(bad).endswith("(field: symbol)")
    assert unknown.is_error and text(unknown).startswith(
        "market service error 404 symbol_not_found"
    )
    assert bad_range.is_error and "market service error 422" in text(bad_range)


def test_a_service_that_fails_to_start_is_named_and_the_others_keep_serving(
    tmp_path: Path, register_widgets: Callable[..., None]
) -> None:
    register_widgets(fail_startup=True)
    specs = write_specs(tmp_path / "openapi", widgets=create_widgets_app())
    shutil.copy(specs / "widgets.json", specs / "ghost.json")  # a spec without a service
    gateway = build_gateway(
        GatewaySettings(spec_dir=specs), app_factories={"market": market_factory(tmp_path)}
    )
    assert {"ghost_get_widget", "widgets_get_widget"} <= tool_names(gateway)

    widget, ghost, price = call_tools(
        gateway,
        ("widgets_get_widget", {"widget_id": 1}),
        ("ghost_get_widget", {"widget_id": 1}),
        ("market_get_price", {"symbol": "AAPL"}),
    )
    assert widget.is_error
    assert text(widget).startswith("widgets service error 503 service_unavailable: ")
    assert "failed to start (RuntimeError: widget store offline)" in text(widget)
    assert ghost.is_error
    assert "ghost service error 503" in text(ghost) and "cannot be imported" in text(ghost)
    assert not price.is_error and price.structured_content["symbol"] == "AAPL"


def test_remote_mode_sends_the_service_token_and_names_a_service_that_is_down(
    tmp_path: Path,
) -> None:
    app = create_market_app(market_settings(tmp_path, SHARED_CSV_DIR, api_token=SecretStr("s3")))
    specs = write_specs(tmp_path / "openapi", widgets=create_widgets_app())
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with serve_in_thread(app, free_port()) as url:
        good = GatewaySettings(
            mode="remote",
            spec_dir=specs,
            service_urls={"market": url, "widgets": dead},
            service_token=SecretStr("s3"),
        )
        price, widget = call_tools(
            build_gateway(good),
            ("market_get_price", {"symbol": "AAPL"}),
            ("widgets_get_widget", {"widget_id": 1}),
        )
        wrong = good.model_copy(update={"service_token": SecretStr("nope")})
        (refused,) = call_tools(build_gateway(wrong), ("market_get_price", {"symbol": "AAPL"}))

    assert not price.is_error and price.structured_content["timestamp"].startswith("2023-10-27")
    assert widget.is_error
    assert text(widget).startswith(
        f"widgets service error 503 service_unavailable: The widgets service is unreachable "
        f"at {dead}"
    )
    assert refused.is_error
    assert text(refused).startswith("market service error 401 unauthorized")


def test_remote_mode_defaults_to_the_trading_serve_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trading.host import build_platform_app

    monkeypatch.setenv("MARKET_PROVIDERS", "csv")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("API_TOKEN", raising=False)
    with serve_in_thread(build_platform_app(), free_port()) as url:
        settings = GatewaySettings(mode="remote", spec_dir=OPENAPI_DIR, remote_base_url=url)
        (hist,) = call_tools(
            build_gateway(settings),
            ("market_get_historical", {"symbol": "MSFT", "start": "2023-10-23"}),
        )
    assert not hist.is_error, text(hist)
    assert [b["timestamp"][:10] for b in hist.structured_content["bars"]] == [
        "2023-10-23",
        "2023-10-24",
        "2023-10-25",
        "2023-10-26",
        "2023-10-27",
    ]


def test_settings_read_service_urls_and_tokens_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_MODE", "remote")
    monkeypatch.setenv("GATEWAY_BACKTEST_URL", "http://backtest:8000")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "sqlite://")  # a setting, not a service
    monkeypatch.setenv("GATEWAY_TOKEN", "front")
    monkeypatch.setenv("API_TOKEN", "back")
    settings = GatewaySettings()
    assert settings.mode == "remote"
    assert settings.service_urls == {"backtest": "http://backtest:8000"}
    assert settings.service_url("backtest") == "http://backtest:8000"
    assert settings.service_url("market") == "http://127.0.0.1:8000/market"
    assert settings.http_token() == SecretStr("front")
    assert settings.service_token == SecretStr("back")
    monkeypatch.setenv("GATEWAY_SERVICE_TOKEN", "svc")
    assert GatewaySettings().service_token == SecretStr("svc")
