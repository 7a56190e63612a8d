"""The service kit for calling another service: its settings, its client, its problems.

A service that calls a peer declares three settings with `peer_url`, `peer_token` and
`peer_timeout` (`<PEER>_URL` or `<SERVICE>_<PEER>_URL`, `<SERVICE>_<PEER>_TOKEN`,
`<SERVICE>_<PEER>_TIMEOUT_S`), builds its client with `peer_client(settings, "market")`, and
sends requests with `ask`, which turns the peer's problem answers into this service's
problems: the same status family, naming this service's request fields (`FieldMap`). What it
does with an answer (parsing, its own field names) stays in the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import AliasChoices, Field, SecretStr

from shared.config import BaseServiceSettings
from shared.errors import (
    AppError,
    ServiceUnavailableError,
    SymbolNotFoundError,
    UpstreamUnavailableError,
    ValidationProblemError,
)
from shared.http import ServiceClient, UpstreamProblemError, service_client


def peer_url(peer: str, service: str, purpose: str) -> Any:
    """Return the setting of a peer's base URL (`<PEER>_URL`, `<SERVICE>_<PEER>_URL`)."""
    name, prefix = peer.upper(), service.upper()
    return Field(
        default=None,
        validation_alias=AliasChoices(f"{name}_URL", f"{prefix}_{name}_URL", f"{peer}_url"),
        description=f"Base URL of the {peer} service ({purpose}), e.g. http://{peer}:8000. "
        f"Unset: the co-hosted {peer} app in-process, else http://127.0.0.1:8000/{peer}.",
    )


def peer_token(peer: str, service: str) -> Any:
    """Return the setting of the bearer token sent to a peer (`<SERVICE>_<PEER>_TOKEN`)."""
    return Field(
        default=None,
        validation_alias=AliasChoices(f"{service.upper()}_{peer.upper()}_TOKEN", f"{peer}_token"),
        description=f"Bearer token sent to the {peer} service (default: SERVICE_TOKEN, else "
        "API_TOKEN).",
    )


def peer_timeout(peer: str, service: str, *, default: float, also: tuple[str, ...] = ()) -> Any:
    """Return the setting of the seconds one peer answer may take
    (`<SERVICE>_<PEER>_TIMEOUT_S`, or any name in also)."""
    return Field(
        default=default,
        gt=0,
        validation_alias=AliasChoices(
            f"{service.upper()}_{peer.upper()}_TIMEOUT_S", f"{peer}_timeout_s", *also
        ),
        description=f"Seconds to wait for one {peer} answer.",
    )


def peer_bearer(settings: BaseServiceSettings, peer: str) -> SecretStr | None:
    """Return the token to send to peer: its own, else SERVICE_TOKEN, else API_TOKEN."""
    token: SecretStr | None = getattr(settings, f"{peer}_token")
    return token or settings.service_token or settings.api_token


def peer_client(settings: BaseServiceSettings, peer: str) -> ServiceClient:
    """Return a client of peer from the settings' `<peer>_url`, `_token` and `_timeout_s`."""
    return service_client(
        peer,
        getattr(settings, f"{peer}_url"),
        token=peer_bearer(settings, peer),
        timeout_s=getattr(settings, f"{peer}_timeout_s"),
    )


@dataclass(frozen=True)
class FieldMap:
    """This service's name for each field a peer's problem blames."""

    default: str  # the peer blames no field
    names: Mapping[str, str] = field(default_factory=dict)  # the peer's name -> ours
    others: str | None = None  # any other name the peer blames (None: kept as it is)
    unknown: str | None = None  # what an unknown symbol blames when the peer names no field

    def __call__(self, name: str | None) -> str:
        """Return this service's name of the peer's field name."""
        if name is None:
            return self.default
        if name in self.names:
            return self.names[name]
        return name if self.others is None else self.others


def translate(
    e: UpstreamProblemError,
    about: str,
    fields: FieldMap,
    *,
    no_data: tuple[type[AppError], str] | None = None,
) -> AppError:
    """Return the problem a peer's problem about `about` (a symbol, a step) means here.

    A 404 is an unknown symbol; no_data, when given, is (error class, field) for the peer's
    404 `no_data` (a range without bars). 400/422 stay invalid input, 503/504 stay
    unavailability, anything else is the peer failing (502).
    """
    detail = f"{about}: {e.service} service: {e.detail}"
    if e.status == 404 and e.code == "no_data" and no_data is not None:
        error, name = no_data
        return error(detail, field=name)
    if e.status == 404:
        blamed = e.problem.field
        unknown = fields.unknown if blamed is None and fields.unknown else fields(blamed)
        return SymbolNotFoundError(detail, field=unknown)
    if e.status in (400, 422):
        return ValidationProblemError(detail, field=fields(e.problem.field))
    if e.status in (503, 504):
        return ServiceUnavailableError(
            f"The {e.service} service could not serve {about}: {e.detail}"
        )
    return UpstreamUnavailableError(
        f"The {e.service} service failed for {about} ({e.status} {e.code}): {e.detail}"
    )


async def ask(
    client: ServiceClient,
    method: str,
    path: str,
    *,
    about: str,
    fields: FieldMap,
    no_data: tuple[type[AppError], str] | None = None,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
) -> httpx.Response:
    """Send a request to a peer; raise its problem as this service's (`translate`)."""
    try:
        return await client.request(method, path, params=params, json=json)
    except UpstreamProblemError as e:
        raise translate(e, about, fields, no_data=no_data) from e
