"""An unexpected error against a real uvicorn: a whole 500 problem, logged once, and the
keep-alive connection it came on still serves the client's next request.

The service is `tests.unit.shared.limits_app` (its `GET /boom` fails on purpose), served
alone and mounted in a platform app as `trading serve` mounts services.
"""

from __future__ import annotations

import json
import os
import re
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

REPO = Path(__file__).resolve().parents[2]
SAFETY_S = 60.0


@dataclass(frozen=True)
class Served:
    """A started server: its port, the service's prefix and its log file."""

    port: int
    prefix: str
    log: Path


@pytest.fixture(scope="module", params=["alone", "mounted"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Serve the limits test app with uvicorn (alone, or under /limits in a platform app)."""
    tmp_path = tmp_path_factory.mktemp("server-errors")
    port = free_port()
    factory, prefix = {
        "alone": ("create_app", ""),
        "mounted": ("create_platform", "/limits"),
    }[request.param]
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {
        **{k: v for k, v in os.environ.items() if k in keep},
        "PYTHONPATH": str(REPO),
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "INFO",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"tests.unit.shared.limits_app:{factory}",
        "--http",
        "shared.server:HttpProtocol",
        "--port",
        str(port),
    ]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{prefix}/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield Served(port, prefix, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _read_answer(sock: socket.socket, buffered: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer with a content-length; return status, headers, body."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed mid-head after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        rest += chunk
    return status, headers, rest[:length]


def _get(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return _read_answer(sock)


def test_a_500_is_a_whole_problem_and_the_connection_serves_the_next_request(
    served: Served,
) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=SAFETY_S) as sock:
        for _ in range(3):  # each 500 leaves the connection usable, not just the first
            status, headers, body = _get(sock, f"{served.prefix}/boom")
            assert status == 500
            assert headers["content-type"] == "application/problem+json"
            assert headers.get("connection") != "close"
            problem = json.loads(body)
            assert problem["code"] == "internal_error"
            assert "boom on purpose" not in body.decode()  # the cause stays in the log
            assert re.fullmatch(r"[0-9a-f]{12}", problem["error_id"])
            status, _, body = _get(sock, f"{served.prefix}/echo/7")
            assert (status, json.loads(body)) == (200, {"n": 7})


def test_a_500_is_logged_once_under_the_id_it_answers(served: Served) -> None:
    error_id = httpx.get(f"http://127.0.0.1:{served.port}{served.prefix}/boom").json()["error_id"]
    deadline = time.monotonic() + SAFETY_S
    while error_id not in served.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a second record, were there one, is written right after the first
    text = served.log.read_text()
    assert text.count(f"error_id={error_id}") == 1
    assert text.count("RuntimeError: boom") == text.count("error_id=")  # one traceback per id
    assert "Exception in ASGI application" not in text  # uvicorn logs nothing of its own
