"""Request limits of every service: body size (413) and concurrency (503 + Retry-After).

Both are ASGI middlewares installed by `shared.app.service_app` and answer RFC 9457 problem
details. Ops routes (tag `ops`: `/health`, `/metrics`) and the framework's own pages are
never limited by concurrency, so an orchestrator can still ask how an overloaded service is.
Slow clients are cut before they reach the app, by the HTTP protocol of `shared.server`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PROBLEM_MEDIA_TYPE, AppError, Problem
from shared.metrics import count_rejection, route_of


class PayloadTooLargeError(AppError):
    """The request body is larger than the service accepts."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class OverloadedError(AppError):
    """The service is handling as many requests as it may; retry after `Retry-After`."""

    status = 503
    code = "overloaded"
    title = "Service overloaded"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit (FastAPI re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large_detail(limit))


def _too_large_detail(limit: int) -> str:
    return f"The request body is larger than this service accepts ({limit} bytes at most)."


async def send_problem(
    scope: Scope, send: Send, problem: Problem, headers: dict[str, str] | None = None
) -> None:
    """Send problem as a complete application/problem+json answer (from an ASGI middleware)."""
    body = json.dumps(problem.model_dump(mode="json", exclude_none=True)).encode()
    raw = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def request_path(scope: Scope) -> str:
    """Return the path the client asked for (a problem's `instance`).

    In a mounted app (`trading serve`'s /market) the scope's `path` already holds the mount's
    `root_path`: adding it again gave `/market/market/price/AAPL`.
    """
    return str(scope.get("path", ""))


class BodyLimit:
    """ASGI middleware: answer 413 problem details to a body over `max_bytes`.

    A declared `Content-Length` over the limit is refused before the app runs; a streamed
    (chunked) body is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, service: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or count the body, then pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        count_rejection(self.service, "body_too_large")
        error = PayloadTooLargeError(_too_large_detail(self.max_bytes), field="body")
        # The unread body is not drained: the connection is closed after the answer.
        problem = error.to_problem(instance=request_path(scope))
        await send_problem(scope, send, problem, {"connection": "close"})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Slots:
    """A count of request slots with a bounded, time-limited queue (loop-agnostic).

    `acquire()` returns True at once when a slot is free; otherwise it waits (at most
    `queue_timeout_s`, and only while fewer than `max_queued` others wait) and returns
    False when it could not get one.
    """

    def __init__(self, limit: int, *, max_queued: int, queue_timeout_s: float) -> None:
        self.limit = limit
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Return how many requests wait for a slot."""
        return len(self._waiters)

    async def acquire(self) -> bool:
        """Take a slot, waiting in the bounded queue if needed; False when none came."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        if len(self._waiters) >= self.max_queued or self.queue_timeout_s <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # handed a slot just as the wait ran out
            self._discard(waiter)
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self._discard(waiter)
            raise
        return True  # release() handed its slot over: in_use already counts it

    def release(self) -> None:
        """Give a slot back, to the longest waiter if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class ConcurrencyLimit:
    """ASGI middleware: at most `slots.limit` requests at once; 503 + Retry-After beyond.

    Ops routes and framework pages pass without a slot.
    """

    def __init__(self, app: ASGIApp, slots: Slots, retry_after_s: int, service: str = "") -> None:
        self.app = app
        self.slots = slots
        self.retry_after_s = retry_after_s
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request in a slot, or answer 503 when none is free in time."""
        if scope["type"] != "http" or route_of(scope)[1]:
            await self.app(scope, receive, send)
            return
        if not await self.slots.acquire():
            count_rejection(self.service, "overloaded")
            error = OverloadedError(
                f"The service is handling {self.slots.limit} requests and "
                f"{self.slots.waiting} more are waiting; retry after {self.retry_after_s} s."
            )
            await send_problem(
                scope,
                send,
                error.to_problem(instance=request_path(scope)),
                {"retry-after": str(self.retry_after_s)},
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()


def limits_state(app: Any) -> dict[str, Any]:
    """Return what the limits of app are using now (for tests and diagnostics)."""
    slots = getattr(app.state, "slots", None)
    return {"in_use": slots.in_use, "waiting": slots.waiting} if slots is not None else {}
