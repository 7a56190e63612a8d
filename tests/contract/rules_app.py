"""A tiny service with one documented and one undocumented cross-field rule.

It checks the contract harness itself: the schemathesis CLI run with
`tests.contract.schemathesis_hooks` must let the documented rule's 422 pass and report the
undocumented one. `uvicorn --factory tests.contract.rules_app:create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query

from shared.api import ProblemDocs
from shared.app import service_app
from shared.config import BaseServiceSettings
from shared.errors import ValidationProblemError
from shared.rules import CrossFieldRule, cross_field_rules

errors = ProblemDocs({})
Small = Annotated[int, Query(ge=0, le=100, description="A small number.")]


def create_app() -> FastAPI:
    """Build the rules test service (no database: nothing here stores anything)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = service_app(
        title="Rules test service",
        description="Two ranges.",
        settings=BaseServiceSettings(rate_limit_per_minute=0),
        lifespan=lifespan,
        name="rules",
    )

    @app.get(
        "/documented",
        operation_id="documented_range",
        responses=errors(422),
        **cross_field_rules("Return the range lo..hi.", CrossFieldRule(("lo", "hi"), "lo <= hi")),
    )
    async def documented(lo: Small, hi: Small) -> dict[str, int]:
        if lo > hi:
            raise ValidationProblemError(f"lo={lo} is above hi={hi}", field="lo")
        return {"width": hi - lo}

    @app.get("/undocumented", operation_id="undocumented_range", responses=errors(422))
    async def undocumented(lo: Small, hi: Small) -> dict[str, int]:
        """Return the range lo..hi (it has the same rule, but the spec does not say so)."""
        if lo > hi:
            raise ValidationProblemError(f"lo={lo} is above hi={hi}", field="lo")
        return {"width": hi - lo}

    return app
