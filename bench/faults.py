"""Faults for bench/load.py: a TCP proxy that refuses or silently drops, a killable redis-server."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------- database proxy
PROXY_CHILD = r"""
import asyncio, sys
UP = ("127.0.0.1", int(sys.argv[2]))
mode = "forward"
writers = set()

async def pump(r, w):
    try:
        while data := await r.read(65536):
            if mode == "forward":
                w.write(data); await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()

async def serve(r, w):
    if mode == "refuse":
        w.transport.abort(); return
    writers.add(w)
    if mode == "drop":
        await r.read(); return
    try:
        ur, uw = await asyncio.open_connection(*UP)
    except OSError:
        w.transport.abort(); return
    writers.add(uw)
    await asyncio.gather(pump(r, uw), pump(ur, w))

async def main():
    global mode
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := (await reader.readline()).decode().strip():
        if line == "refuse":  # reset open connections, refuse new ones
            for w in list(writers): w.transport.abort()
            writers.clear()
        elif line == "forward":  # connections that lived through a drop are gone
            for w in list(writers): w.transport.abort()
            writers.clear()
        mode = line
    server.close()

asyncio.run(main())
"""


class Proxy:
    """A TCP proxy in its own process: forward, refuse (reset), or drop (silent)."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROXY_CHILD, str(self.port), str(upstream_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("proxy failed to start")

    def set(self, mode: str) -> None:
        """Switch mode: forward | refuse | drop."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """End the proxy process."""
        self.proc.kill()
        self.proc.wait()


# --------------------------------------------------------------------------- redis-server
class RedisServer:
    """A private redis-server on a free port; `kill()` is a crash, `start()` a restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--maxclients", "10000"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL the server (an outage, not a clean shutdown)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
