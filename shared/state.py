"""Typed `app.state`: each thing an app keeps there has one `Slot` that puts and reads it.

`request.app.state.x` is untyped (`Any`) and fails late, as an AttributeError on `None`.
A slot names the attribute and its type once; reading it checks both:

    BACKTEST = Slot("backtest", BacktestService)          # routes.py
    Service = Annotated[BacktestService, Depends(BACKTEST)]
    BACKTEST.put(app, BacktestService(...))                # the app's lifespan

A slot is an `async` FastAPI dependency: a plain `def` one would cost a worker-thread hop
per request for an attribute read.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request

T = TypeVar("T")


class Slot(Generic[T]):
    """One typed attribute of `app.state`."""

    def __init__(self, name: str, kind: type[T]) -> None:
        self.name = name
        self.kind = kind

    def put(self, app: Starlette, value: T) -> T:
        """Keep value on app's state; return it."""
        setattr(app.state, self.name, value)
        return value

    def find(self, app: Starlette) -> T | None:
        """Return the value kept on app's state, or None (none yet, or not a `kind`)."""
        value = getattr(app.state, self.name, None)
        return value if isinstance(value, self.kind) else None

    def get(self, app: Starlette) -> T:
        """Return the value kept on app's state (RuntimeError: none, or not a `kind`)."""
        value = self.find(app)
        if value is None:
            raise RuntimeError(
                f"app.state.{self.name} is not a {self.kind.__name__} (its lifespan sets it)"
            )
        return value

    def of(self, request: Request) -> T:
        """Return the value kept on the state of the app that serves request."""
        return self.get(request.app)

    async def __call__(self, request: Request) -> T:
        """Return the value kept on the request's app (as a FastAPI dependency)."""
        return self.of(request)
