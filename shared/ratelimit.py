"""Incoming rate limits: N requests per minute per client and operation, 429 beyond.

The seed's design: a counter `ratelimit:{user_id}:{endpoint}` in Redis (under REDIS_PREFIX)
that lives one minute from the client's first request of the window. `user_id` is a hash of
the bearer token when the service checks tokens (every client of one shared token shares its
limits), else the client's address; `endpoint` is the operation id. Without Redis, or while
Redis does not answer, the same counters are kept in the process (with several workers or
replicas each then counts on its own). Ops routes are never limited, and neither are the
platform's own calls: a request from a co-hosted service (in-process, see
`shared.http.INTERNAL_SCOPE_KEY`) or carrying the service token (`SERVICE_TOKEN`) is not
counted against the user whose request caused it.

:class:`AuthFailureLimit` bounds guessing: past N failed authentications (401) per minute
from one address, that address is answered 429 with Retry-After until its minute ends.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import RateLimitedError
from shared.limits import request_path, send_problem
from shared.logging import mask_secrets
from shared.metrics import count_rejection, route_of

log = logging.getLogger(__name__)

WINDOW_S = 60
KEY = "ratelimit:{user_id}:{endpoint}"
# Set (to True) in the scope of a request a co-hosted service sends in-process.
INTERNAL_SCOPE_KEY = "trading.internal"


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request."""

    allowed: bool
    count: int
    retry_after_s: int


class LocalWindows:
    """In-process fixed windows: key -> (window end, count), bounded in size."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one request under key; return (count in this window, seconds it has left)."""
        now = time.monotonic()
        ends, count = self._windows.get(key, (0.0, 0))
        if ends <= now:
            ends, count = now + window_s, 0
        count += 1
        self._windows[key] = (ends, count)
        self._windows.move_to_end(key)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return count, max(1, int(ends - now + 0.999))

    def peek(self, key: str) -> tuple[int, int]:
        """Return (count in key's current window, seconds it has left) without counting."""
        now = time.monotonic()
        ends, count = self._windows.get(key, (0.0, 0))
        if ends <= now:
            return 0, 0
        return count, max(1, int(ends - now + 0.999))

    def __len__(self) -> int:
        return len(self._windows)


class RateLimiter:
    """Count requests per (user, endpoint) per minute in Redis, or in-process without it."""

    RETRY_REDIS_AFTER_S = 5.0

    def __init__(
        self,
        *,
        per_minute: int,
        redis_url: str | None = None,
        prefix: str = "",
        timeout_s: float = 0.5,
        max_connections: int = 50,
        window_s: int = WINDOW_S,
    ) -> None:
        self.per_minute = per_minute
        self.redis_url = redis_url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.window_s = window_s
        self.local = LocalWindows()
        self.redis: Redis | None = None
        self._down_since: float | None = None

    @property
    def enabled(self) -> bool:
        """Tell whether requests are limited at all (a limit of 0 turns it off)."""
        return self.per_minute > 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RateLimiter]:
        """Open the Redis pool (when configured) for the app's lifetime; close it after."""
        if self.enabled and self.redis_url:
            pool = BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=self.max_connections,
                timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )
            self.redis = Redis(connection_pool=pool)
        try:
            yield self
        finally:
            redis, self.redis = self.redis, None
            if redis is not None:
                await redis.aclose()
                await redis.connection_pool.disconnect()

    def key(self, user_id: str, endpoint: str) -> str:
        """Return the Redis key of a user's counter for an endpoint (with the prefix)."""
        return self.prefix + KEY.format(user_id=user_id, endpoint=endpoint)

    async def hit(self, user_id: str, endpoint: str) -> Decision:
        """Count one request of user_id to endpoint; say whether it is within the limit."""
        key = self.key(user_id, endpoint)
        counted = await self._redis_hit(key)
        count, left = counted if counted is not None else self.local.hit(key, self.window_s)
        return Decision(allowed=count <= self.per_minute, count=count, retry_after_s=left)

    async def _redis_hit(self, key: str) -> tuple[int, int] | None:
        if self.redis is None:
            return None
        if (
            self._down_since is not None
            and time.monotonic() - self._down_since < self.RETRY_REDIS_AFTER_S
        ):
            return None
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, self.window_s, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        except (RedisError, OSError) as e:
            # A full pool under load is not an outage: count this request locally only.
            if "No connection available" not in str(e):
                if self._down_since is None:
                    log.warning(
                        "rate limits counted in-process: Redis %s did not answer (%s)",
                        mask_secrets(self.redis_url or ""),
                        type(e).__name__,
                    )
                self._down_since = time.monotonic()
            return None
        if self._down_since is not None:
            log.warning("rate limits counted in Redis %s again", mask_secrets(self.redis_url or ""))
            self._down_since = None
        left = int(ttl) if int(ttl) > 0 else self.window_s
        return int(count), left


def client_id(scope: Scope, *, trust_token: bool) -> str:
    """Return who a request counts against: its bearer token's hash, else its address."""
    if trust_token:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token:
                    return "t-" + hashlib.sha256(token.encode()).hexdigest()[:16]
    client = scope.get("client")
    return "a-" + (str(client[0]) if client else "unknown")


def bearer_token(scope: Scope) -> bytes:
    """Return the request's bearer token (b"" without one)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token if scheme.lower() == b"bearer" else b""
    return b""


def is_internal(scope: Scope, service_token: bytes | None) -> bool:
    """Tell whether a request is the platform's own: in-process, or with the service token."""
    if scope.get(INTERNAL_SCOPE_KEY):
        return True
    given = bearer_token(scope) if service_token else b""
    return bool(given) and hmac.compare_digest(given, service_token or b"")


class RateLimit:
    """ASGI middleware: 429 problem details with Retry-After past the per-minute limit."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        trust_token: bool,
        service: str = "",
        service_token: bytes | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.trust_token = trust_token
        self.service = service
        self.service_token = service_token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request; refuse it when its client is over the limit."""
        if scope["type"] != "http" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        operation, exempt = route_of(scope)
        if exempt or is_internal(scope, self.service_token):
            await self.app(scope, receive, send)
            return
        user = client_id(scope, trust_token=self.trust_token)
        decision = await self.limiter.hit(user, operation)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        count_rejection(self.service, "rate_limited")
        error = RateLimitedError(
            f"Rate limit reached: {self.limiter.per_minute} requests per minute per client "
            f"for {operation}; retry after {decision.retry_after_s} s."
        )
        await send_problem(
            scope,
            send,
            error.to_problem(instance=request_path(scope)),
            {"retry-after": str(decision.retry_after_s)},
        )


class AuthFailureLimit:
    """ASGI middleware: past `per_minute` 401 answers to one address, 429 to that address.

    It wraps whatever authenticates (a service's bearer check, the gateway's token
    verifier) and counts the 401s that come back, per client address, in this process. An
    address over the limit is refused before authentication, whatever token it sends, so
    guessing gets `per_minute` tries a minute and learns nothing from the rest. In-process
    requests (co-hosted services) and ops routes (`/health`) are never counted or refused.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        service: str = "",
        open_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.per_minute = per_minute
        self.service = service
        self.open_paths = open_paths
        self.windows = LocalWindows(max_keys=100_000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an address over the limit; count the 401s answered to the others."""
        if (
            scope["type"] != "http"
            or self.per_minute <= 0
            or scope.get(INTERNAL_SCOPE_KEY)
            or scope.get("path") in self.open_paths
            or route_of(scope)[1]  # ops routes need no token: a health probe is never held up
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = "a-" + (str(client[0]) if client else "unknown")
        count, left = self.windows.peek(key)
        if count >= self.per_minute:
            count_rejection(self.service, "auth_failures")
            error = RateLimitedError(
                f"Too many failed authentications from this address ({self.per_minute} a "
                f"minute); retry after {left} s."
            )
            await send_problem(
                scope,
                send,
                error.to_problem(instance=request_path(scope)),
                {"retry-after": str(left)},
            )
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.windows.hit(key, WINDOW_S)
            await send(message)

        await self.app(scope, receive, counting_send)
