"""Settings of the MCP gateway (environment prefix `GATEWAY_`).

Embedded mode (the default) needs no setting at all: every service spec in `openapi/` is
served by its app inside the gateway process. Remote mode reads each service's base URL
from `GATEWAY_<NAME>_URL` (e.g. `GATEWAY_MARKET_URL=http://market:8000`), falling back to
`GATEWAY_REMOTE_BASE_URL/<name>`, which is where `trading serve` mounts every service.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway_mcp.origins import LOOPBACK
from shared.config import BaseServiceSettings

ENV_PREFIX = "GATEWAY_"
# openapi/<service>.json, shipped inside this package (specs/ links to the repository's
# openapi/ folder, and a built wheel carries the files themselves).
PACKAGED_SPECS = Path(__file__).resolve().parent / "specs"
_SERVICE_URL_ENV = re.compile(r"^GATEWAY_([A-Z][A-Z0-9_]*)_URL$", re.IGNORECASE)


class ServiceUrlSource(PydanticBaseSettingsSource):
    """Collect `GATEWAY_<NAME>_URL` variables into `service_urls` (service names are open-ended)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: this source answers for one field only, in __call__."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """Return {"service_urls": {name: url}} from the process environment."""
        own_fields = set(self.settings_cls.model_fields)
        urls: dict[str, str] = {}
        for key, value in os.environ.items():
            match = _SERVICE_URL_ENV.match(key)
            if not match or not value:
                continue
            name = match.group(1).lower()
            if f"{name}_url" in own_fields:  # GATEWAY_DATABASE_URL etc. are settings, not services
                continue
            urls[name] = value
        return {"service_urls": urls} if urls else {}


# Tool groups served only when named in GATEWAY_TOOLSETS (or `all`): paper trading's tools
# would take the default tool set past its context budget (32 kB), and research needs none.
OPT_IN_TOOLSETS = frozenset({"portfolio"})


class GatewaySettings(BaseServiceSettings):
    """Settings of the MCP gateway."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        populate_by_name=True,
    )

    mode: Literal["embedded", "remote"] = Field(
        default="embedded",
        description="`embedded`: run each service app in-process (SQLite, in-process cache); "
        "`remote`: call services over HTTP at their configured URLs.",
    )
    spec_dir: Path = Field(
        default=PACKAGED_SPECS,
        description="Folder of <service>.json OpenAPI specs; one tool namespace per file.",
    )
    service_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Remote mode: service name -> base URL. Also read from GATEWAY_<NAME>_URL.",
    )
    remote_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Remote mode: services without their own URL are at <this>/<name> "
        "(the layout of `trading serve`).",
    )
    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_SERVICE_TOKEN", "API_TOKEN", "service_token"),
        description="Bearer token sent to the services (defaults to the services' API_TOKEN).",
    )
    service_timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP request.")
    host: str = Field(
        default="127.0.0.1",
        description="HTTP transport: interface to bind (loopback unless told otherwise).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK),
        description="HTTP transport: host names a request's `Host` may name (any port); `*` "
        "allows any. Default: loopback. Others are answered 403 (DNS rebinding).",
    )
    allowed_origins: list[str] = Field(
        default_factory=lambda: list(LOOPBACK),
        description="HTTP transport: host names (or `scheme://host[:port]`, compared by host "
        "name) a browser's `Origin` may have; `*` allows any. Default: loopback. A request "
        "without `Origin` passes; a foreign one is answered 403 (the MCP transport's rule).",
    )
    port: int = Field(default=8765, ge=1, le=65535, description="HTTP transport: TCP port.")
    path: str = Field(default="/mcp", description="HTTP transport: endpoint path.")
    token: SecretStr | None = Field(
        default=None,
        description="HTTP transport: bearer token clients must send (GATEWAY_TOKEN). Unset = "
        "no authentication (only sensible on loopback).",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("GATEWAY_LOG_LEVEL", "LOG_LEVEL", "log_level"),
        description="Log level (logs go to stderr).",
    )
    default_limit: int = Field(
        default=100, ge=1, description="Rows per list in a tool answer when `limit` is not given."
    )
    max_limit: int = Field(default=1000, ge=1, description="Largest `limit` a tool accepts.")
    max_answer_bytes: int = Field(
        default=50_000, ge=1000, description="Largest tool answer (JSON bytes) sent to a model."
    )
    page_bytes: int = Field(
        default=24_000,
        ge=2000,
        description="Size of a page of an answer paged by size (GATEWAY_PAGE_BYTES, JSON "
        "bytes; capped at GATEWAY_MAX_ANSWER_BYTES): multi-symbol answers, whose rows are "
        "documents, come in pages of about this many bytes (some 6k tokens by default).",
    )
    job_poll_interval_s: float = Field(
        default=0.5, gt=0, description="Longest wait between two polls of a running job."
    )
    job_timeout_s: float = Field(
        default=900.0, gt=0, description="Give up following a job after this long."
    )
    call_budget_s: float = Field(
        default=40.0,
        gt=0,
        description="Longest a tool call may take (GATEWAY_CALL_BUDGET_S): a job still running "
        "then is answered with its handle and the `<service>_get_job` call that continues. "
        "Keep it under the client's request timeout (Claude Desktop: 60 s).",
    )
    toolsets: str = Field(
        default="",
        description="Comma-separated tool groups to serve (GATEWAY_TOOLSETS, e.g. "
        "`market,backtest` or `all`); empty = every research service (market, backtest, "
        "predictor, ...), without the opt-in groups (`portfolio`: paper trading).",
    )

    def serves(self, name: str) -> bool:
        """Return whether the tool group `name` is served."""
        names = {n.strip().lower() for n in self.toolsets.split(",") if n.strip()}
        if not names:
            return name not in OPT_IN_TOOLSETS
        return "all" in names or name in names

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add GATEWAY_<NAME>_URL collection below the ordinary sources."""
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            ServiceUrlSource(settings_cls),
            file_secret_settings,
        )

    def http_token(self) -> SecretStr | None:
        """Return the token HTTP clients must present (GATEWAY_TOKEN, else GATEWAY_API_TOKEN)."""
        for candidate in (self.token, self.api_token):
            if candidate is not None and candidate.get_secret_value():
                return candidate
        return None

    def service_url(self, name: str) -> str:
        """Return the base URL of a service in remote mode."""
        return self.service_urls.get(name) or f"{self.remote_base_url.rstrip('/')}/{name}"
