"""Single flight: concurrent callers asking for the same key share one computation.

The computation runs in its own task, so a caller that gives up (a client disconnect, a
timeout) never cancels it for the others, and its result still lands where it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running computation per key; later callers wait for that one."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}
        self.started = 0  # computations started (for tests and metrics)
        self.joined = 0  # callers that waited for another caller's computation

    def running(self, key: str) -> bool:
        """Tell whether a computation for key is in flight."""
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def start(self, key: str, fn: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Start fn for key unless one is already running; return the running task."""
        task = self._flights.get(key)
        if task is not None:
            return task
        task = asyncio.ensure_future(_call(fn))
        self._flights[key] = task
        self.started += 1
        task.add_done_callback(lambda t: self._done(key, t))
        return task

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Return fn()'s result, computed once for every concurrent caller of key."""
        if key in self._flights:
            self.joined += 1
        return await asyncio.shield(self.start(key, fn))

    async def drain(self) -> None:
        """Wait until no computation is running (their failures are not raised here)."""
        while self._flights:
            await asyncio.wait(list(self._flights.values()))

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waited for is not "never retrieved"


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()
