"""E2E over streamable HTTP: `trading mcp --http` as a subprocess with GATEWAY_TOKEN set; the
official `mcp` SDK client with and without the token; `/mcp` and `/mcp/` without redirects."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.e2e.conftest import TRADING, csv_closes, gateway_env, snapshot_names
from trading.cli import free_port

pytestmark = pytest.mark.e2e

TOKEN = "e2e-gateway-token"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"gateway did not listen on {port} within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `trading mcp --http` on a free port; stop it (and check it stopped) afterwards."""
    if not TRADING.exists():
        pytest.fail(f"console script missing: {TRADING} (run `make install`)")
    tmp = tmp_path_factory.mktemp("gateway-http")
    port = free_port()
    log = tmp / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(TRADING), "mcp", "--http", "--port", str(port)],
            env=gateway_env(tmp, GATEWAY_TOKEN=TOKEN),
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.returncode is not None


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
def test_http_needs_the_token(gateway_url: str, path: str) -> None:
    with httpx.Client(base_url=gateway_url, follow_redirects=False, timeout=10) as http:
        missing = http.post(path, json=INITIALIZE, headers=MCP_HEADERS)
        wrong = http.post(
            path, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
        )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].lower().startswith("bearer")
    assert wrong.status_code == 401


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
def test_http_mcp_path_answers_with_and_without_slash(gateway_url: str, path: str) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=gateway_url, follow_redirects=False, timeout=10) as http:
        response = http.post(path, json=INITIALIZE, headers=headers)
    assert response.status_code == 200, response.text
    assert "trading-platform" in response.text
    assert response.headers.get("mcp-session-id")


async def _session(
    url: str, token: str | None, scenario: Any, statuses: list[int] | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    client = httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(30, read=60), event_hooks={"response": [record]}
    )
    with anyio.fail_after(30):
        async with (
            client as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await scenario(session)


def test_http_sdk_client_with_token_gets_tools_and_real_data(gateway_url: str) -> None:
    async def scenario(session: ClientSession) -> dict[str, Any]:
        return {
            "tools": (await session.list_tools()).tools,
            "price": await session.call_tool("market_get_price", {"symbol": "AAPL"}),
            "hist": await session.call_tool(
                "market_get_historical", {"symbol": "AAPL", "start": "2023-10-20"}
            ),
            "bad": await session.call_tool("market_get_historical", {"symbol": "BAD!!"}),
        }

    out = anyio.run(_session, gateway_url, TOKEN, scenario)
    closes = csv_closes("AAPL")

    assert sorted(t.name for t in out["tools"]) == snapshot_names()
    assert not out["price"].is_error, text_of(out["price"])
    assert out["price"].structured_content["price"] == pytest.approx(closes["2023-10-27"])
    assert not out["hist"].is_error, text_of(out["hist"])
    bars = out["hist"].structured_content["bars"]
    assert [b["timestamp"][:10] for b in bars] == [d for d in closes if d >= "2023-10-20"]
    assert out["bad"].is_error
    assert text_of(out["bad"]).startswith("market service error 422 validation_error")
    assert "(field: symbol)" in text_of(out["bad"])


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_http_sdk_client_without_the_token_is_refused(gateway_url: str, token: str | None) -> None:
    async def scenario(session: ClientSession) -> Any:
        return await session.list_tools()

    statuses: list[int] = []
    with pytest.raises(Exception) as refused:
        anyio.run(_session, gateway_url, token, scenario, statuses)
    assert "MCPError" in repr(refused.value)
    assert statuses and set(statuses) == {401}, statuses
