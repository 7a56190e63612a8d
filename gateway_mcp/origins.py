"""Who may reach the gateway's HTTP transport: its `Host` and a browser's `Origin`.

The MCP streamable-HTTP transport requires servers to check `Origin` (a web page must not
drive a local MCP server from the user's browser), and a `Host` check defeats DNS
rebinding (a page whose name resolves to 127.0.0.1). Both are compared by host name, any
port, against allow-lists that default to loopback (`GATEWAY_ALLOWED_HOSTS`,
`GATEWAY_ALLOWED_ORIGINS`; `*` allows any). A request without `Origin` (a program, not a
browser) passes the origin check; every request must name an allowed `Host`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import Problem
from shared.limits import request_path, send_problem

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def host_name(authority: str) -> str:
    """Return the lower-case host name of `host[:port]` (`[::1]:8765` -> `::1`)."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") > 1:  # a bare IPv6 address
        return authority
    return authority.partition(":")[0]


def origin_host(origin: str) -> str | None:
    """Return the host name of an `Origin` header, None for `null` or nonsense."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower()


def _names(entries: Iterable[str]) -> frozenset[str]:
    return frozenset(host_name(e.split("://", 1)[-1]) if e != "*" else "*" for e in entries)


class OriginGuard:
    """ASGI middleware: 403 problem details for a foreign `Origin` or `Host`."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], origins: Iterable[str]) -> None:
        self.app = app
        self.hosts = _names(hosts)
        self.origins = _names(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request from a foreign origin or to a foreign host name."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get(b"host", "")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            await self._refuse(scope, send, "host", f"Host {host!r} is not served here.")
            return
        origin = headers.get(b"origin")
        foreign = "*" not in self.origins and origin_host(origin or "") not in self.origins
        if origin is not None and foreign:
            await self._refuse(scope, send, "origin", f"Origin {origin!r} is not allowed.")
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, code: str, detail: str) -> None:
        problem = Problem(
            type=f"urn:problem:forbidden_{code}",
            title="Forbidden",
            status=403,
            detail=detail + " Allowed: GATEWAY_ALLOWED_HOSTS / GATEWAY_ALLOWED_ORIGINS.",
            code=f"forbidden_{code}",
            instance=request_path(scope),
        )
        await send_problem(scope, send, problem)
