"""Slow and oversized clients against real servers: `trading serve` and the documented uvicorn.

Each case speaks raw HTTP over a socket and trickles its request; the server must answer
and close the connection long before the client would have finished. The socket timeout
(SAFETY_S) only stops a broken test; nothing here asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from trading.cli import free_port

SAFETY_S = 60.0
TRICKLES = 600  # a trickle every 0.1 s: a minute, far past the 1 s limits


@dataclass(frozen=True)
class Server:
    """A started server: where it listens and under which prefix its service lives."""

    port: int
    prefix: str


def _env(tmp_path: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "DATA_DIR": str(tmp_path),
        "MARKET_PROVIDERS": "csv",
        "LOG_LEVEL": "WARNING",
        "HTTP_HEADER_TIMEOUT_S": "1",
        "HTTP_BODY_TIMEOUT_S": "1",
        "HTTP_MAX_HEADER_BYTES": "4096",
        "MAX_BODY_BYTES": "1000",
    }


def _start(
    cmd: list[str], env: dict[str, str], health_url: str, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become healthy")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["trading serve", "uvicorn --factory"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Start `trading serve` (every service, under /market) or uvicorn with the limits' protocol."""
    tmp_path = tmp_path_factory.mktemp("server-limits")
    port = free_port()
    env = _env(tmp_path)
    if request.param == "trading serve":
        cmd = [
            sys.executable,
            "-m",
            "trading.cli",
            "serve",
            "--port",
            str(port),
            "--keep-alive",
            "1",
        ]
        prefix = "/market"
    else:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.unit.shared.limits_app:create_app",
            "--http",
            "shared.server:HttpProtocol",
            "--timeout-keep-alive",
            "1",
            "--port",
            str(port),
        ]
        prefix = ""
    proc = _start(cmd, env, f"http://127.0.0.1:{port}{prefix}/health", tmp_path / "server.log")
    try:
        yield Server(port, prefix)
    finally:
        _stop(proc)


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_S)
    sock.settimeout(SAFETY_S)
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _trickle_until_cut(sock: socket.socket, pieces: Iterator[bytes]) -> tuple[int, bytes]:
    """Send one piece every 0.1 s until the server answers or closes; return (sent, answer)."""
    sent = 0
    for piece in pieces:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
    try:
        return sent, _read_to_eof(sock)
    except ConnectionResetError:
        return sent, b""


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _problem(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head.lower()
    problem: dict[str, object] = json.loads(body)
    return problem


def test_a_client_that_trickles_its_headers_is_answered_408_and_cut(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(f"GET {server.prefix}/health HTTP/1.1\r\nHost: x\r\n".encode())
        lines = (f"X-Slow-{i}: y\r\n".encode() for i in range(TRICKLES))
        sent, answer = _trickle_until_cut(sock, lines)
    assert sent < TRICKLES, "the server waited for the whole trickle"
    assert _status(answer) == 408
    assert _problem(answer)["code"] == "request_timeout"


def test_a_client_that_connects_and_says_nothing_is_cut(server: Server) -> None:
    with _connect(server) as sock:
        answer = _read_to_eof(sock)  # returns only because the server closes
    assert _status(answer) == 408


def test_a_client_that_trickles_its_body_is_cut(server: Server) -> None:
    path = f"{server.prefix}/bulk_fetch" if server.prefix else "/things"
    with _connect(server) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {TRICKLES + 20}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"name": "')
        sent, answer = _trickle_until_cut(sock, (b"x" for _ in range(TRICKLES)))
    assert sent < TRICKLES, "the server waited for the whole body"
    # Cut without an answer: the app was still reading the body when the time ran out.
    assert answer == b"" or _status(answer) >= 400


def test_an_oversize_body_is_refused_with_413_problem_details(server: Server) -> None:
    path = f"{server.prefix}/bulk_fetch" if server.prefix else "/things"
    with _connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 * 2**20}\r\n\r\n".encode()
        )
        answer = _read_to_eof(sock)  # nothing of the 10 MiB was sent; the server closes
    assert _status(answer) == 413
    assert _problem(answer)["code"] == "payload_too_large"


def test_an_oversized_head_is_refused_with_431(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(f"GET {server.prefix}/health HTTP/1.1\r\nHost: x\r\n".encode())
        sock.sendall(b"X-Big: " + b"y" * 8000 + b"\r\n")
        answer = _read_to_eof(sock)
    assert _status(answer) == 431


def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(f"GET {server.prefix}/health HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = _read_to_eof(sock)  # the answer, then EOF once the keep-alive time is up
    assert _status(answer) == 200


def test_trading_serve_with_workers_shares_one_metrics_exposition(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "trading.cli", "serve", "--port", str(port), "--workers", "2"]
    base = f"http://127.0.0.1:{port}/market"
    proc = _start(cmd, _env(tmp_path), f"{base}/health", tmp_path / "server.log")
    try:

        def health_count() -> float:
            text = httpx.get(f"{base}/metrics", timeout=SAFETY_S).text
            wanted = ('operation="health"', 'service="market"', 'status="200"')
            for line in text.splitlines():
                if line.startswith("http_requests_total{") and all(w in line for w in wanted):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        before = health_count()
        for _ in range(20):  # new connections: the workers share them out
            assert httpx.get(f"{base}/health", timeout=SAFETY_S).status_code == 200
        assert health_count() - before == 20
    finally:
        _stop(proc)
