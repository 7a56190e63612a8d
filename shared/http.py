"""A small typed HTTP client base for calling platform services.

The same client works over the network (`base_url`) and in-process (an ASGI app called
through httpx's ASGI transport), so one process can host every service.

Services never import one another. When a composition root hosts several apps in one
process (`trading serve`, the gateway's embedded mode) it registers each under its name with
`register_local_app`; `service_client("market", url)` then calls the URL when one is
configured, else the co-hosted app in-process (still through its HTTP contract), else the
`trading serve` layout on localhost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import AppError, FieldIssue, Problem, ServiceUnavailableError, parse_problem
from shared.ratelimit import INTERNAL_SCOPE_KEY

M = TypeVar("M", bound=BaseModel)


class UpstreamProblemError(AppError):
    """Another service answered with a problem-details error; status and code are kept."""

    def __init__(self, service: str, problem: Problem) -> None:
        super().__init__(
            problem.detail,
            field=problem.field,
            errors=[FieldIssue.model_validate(e) for e in problem.errors or []] or None,
        )
        self.service = service
        self.problem = problem
        self.status = problem.status  # type: ignore[misc]
        self.code = problem.code  # type: ignore[misc]
        self.title = problem.title  # type: ignore[misc]


_LOCAL_APPS: dict[str, ASGIApp] = {}
DEFAULT_HOST_URL = "http://127.0.0.1:8000"


def register_local_app(name: str, app: ASGIApp) -> None:
    """Make app reachable in-process as service `name` (called by composition roots)."""
    _LOCAL_APPS[name] = app


def unregister_local_app(name: str, app: ASGIApp | None = None) -> None:
    """Forget the in-process app of service `name` (only if it is app, when given)."""
    if app is None or _LOCAL_APPS.get(name) is app:
        _LOCAL_APPS.pop(name, None)


def local_app(name: str) -> ASGIApp | None:
    """Return the in-process app registered as service `name`, if any."""
    return _LOCAL_APPS.get(name)


def service_client(
    name: str,
    url: str | None,
    *,
    token: SecretStr | str | None = None,
    timeout_s: float = 30.0,
) -> ServiceClient:
    """Return a client of service `name`: its URL if set, else its co-hosted app, else
    `http://127.0.0.1:8000/<name>` (where `trading serve` mounts it)."""
    if url:
        return ServiceClient(name, base_url=url.rstrip("/"), token=token, timeout_s=timeout_s)
    app = local_app(name)
    if app is not None:
        return ServiceClient(name, app=app, token=token, timeout_s=timeout_s)
    return ServiceClient(
        name, base_url=f"{DEFAULT_HOST_URL}/{name}", token=token, timeout_s=timeout_s
    )


def make_transport(app: ASGIApp | None) -> httpx.AsyncBaseTransport | None:
    """Return an in-process ASGI transport for app, or None for the network.

    Requests sent through it are marked as the platform's own (`INTERNAL_SCOPE_KEY`): a
    co-hosted service calling another is not a user, and is not rate-limited as one.
    """
    return httpx.ASGITransport(app=_Internal(app)) if app is not None else None


class _Internal:
    """ASGI wrapper: mark every request as sent in-process by a co-hosted service."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, INTERNAL_SCOPE_KEY: True}, receive, send)


@asynccontextmanager
async def app_lifespan(app: Any) -> AsyncIterator[None]:
    """Run a FastAPI app's lifespan (startup/shutdown) around an in-process use of it."""
    async with app.router.lifespan_context(app):
        yield


class ServiceClient:
    """Call one service's JSON API and turn its answers into models or AppErrors."""

    def __init__(
        self,
        service: str,
        *,
        base_url: str = "http://service",
        app: ASGIApp | None = None,
        token: SecretStr | str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.service = service
        headers = {}
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self.http = httpx.AsyncClient(
            base_url=base_url,
            transport=make_transport(app),
            headers=headers,
            timeout=timeout_s,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Send a request; raise ServiceUnavailableError or UpstreamProblemError on failure."""
        try:
            response = await self.http.request(method, path, params=params, json=json)
        except httpx.TransportError as e:
            raise ServiceUnavailableError(
                f"The {self.service} service is unreachable at {self.http.base_url}: "
                f"{type(e).__name__}"
            ) from e
        if response.is_error:
            raise self._problem(response)
        return response

    async def get_model(self, path: str, model: type[M], **params: Any) -> M:
        """GET path and parse the JSON body as model."""
        response = await self.request("GET", path, params=_drop_none(params))
        return model.model_validate_json(response.content)

    async def post_model(self, path: str, body: BaseModel | Mapping[str, Any], model: type[M]) -> M:
        """POST a JSON body and parse the answer as model."""
        payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        response = await self.request("POST", path, json=payload)
        return model.model_validate_json(response.content)

    def _problem(self, response: httpx.Response) -> AppError:
        problem = parse_problem(response.status_code, response.content, response.reason_phrase)
        return UpstreamProblemError(self.service, problem)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
