"""Real PostgreSQL and Redis: each test gets its own database and Redis key prefix.

Without the servers these tests skip, unless REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import redis

from tests.conftest import REQUIRE_SERVICES

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.integration


def _unavailable(what: str, e: Exception) -> None:
    message = f"{what} is not reachable ({type(e).__name__}: {e})"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and REQUIRE_SERVICES=1")
    pytest.skip(message)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its asyncpg URL; drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        _unavailable("PostgreSQL", e)
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """Yield a unique Redis key prefix; delete every key under it afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        _unavailable("Redis", e)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """Return a plain Redis client for assertions."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, decode_responses=True)
    yield client
    client.close()


class TcpProxy:
    """A TCP proxy in a thread that can be cut like a silent network drop, then restored.

    Cut: every byte is swallowed (nothing is refused or reset, the peer just never answers),
    which is how a dead link or a packet-dropping firewall looks to a client.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def start(self) -> TcpProxy:
        """Start listening on a free port (see `port`)."""
        self._thread.start()
        self._ready.wait(5)
        return self

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.cut:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut:  # accept, then never answer
            await reader.read()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    def drop(self) -> None:
        """Start swallowing every byte, both ways, on old and new connections."""
        self.cut = True

    def restore(self) -> None:
        """Forward again; connections that lived through the cut are closed (state is lost)."""

        def close_all() -> None:
            for w in list(self._writers):
                w.close()
            self._writers.clear()
            self.cut = False

        self._loop.call_soon_threadsafe(close_all)

    def stop(self) -> None:
        """Close every connection and the listener; end the thread."""

        async def shutdown() -> None:
            for w in list(self._writers):
                w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(5)


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    """Yield a cuttable TCP proxy in front of the test PostgreSQL server."""
    host_port = PG_ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


class RedisServer:
    """A private redis-server on a free port (never the shared one): `kill()` is a crash,
    `start()` a restart on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            for _ in range(100):
                try:
                    if client.ping():
                        return
                except (redis.RedisError, OSError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL the server."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """Yield a started private redis-server that the test may kill and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server", FileNotFoundError("redis-server is not installed"))
        raise AssertionError("unreachable")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()
