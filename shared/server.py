"""The HTTP server side of the limits: slow or oversized request heads and bodies are cut.

uvicorn bounds idle keep-alive connections (`--timeout-keep-alive`) but waits forever for
a request whose head or body trickles in, byte by byte. :class:`HttpProtocol` is uvicorn's
httptools protocol with three more bounds, read from the settings (`HTTP_HEADER_TIMEOUT_S`,
`HTTP_BODY_TIMEOUT_S`, `HTTP_MAX_HEADER_BYTES`):

- the request line and headers must arrive within the header timeout of the request's first
  byte (or of the connection, for a client that connects and says nothing): else 408;
- the body must arrive within the body timeout of the headers: else the connection is cut;
- the head may not exceed the header size: else 431.

`trading serve` and the gateway use it; with uvicorn's own command line name it:

    uvicorn --factory services.market.app:create_app --http shared.server:HttpProtocol \\
        --timeout-keep-alive 5
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.config import BaseServiceSettings
from shared.errors import PROBLEM_MEDIA_TYPE
from shared.metrics import count_cut_connection

log = logging.getLogger(__name__)

PROTOCOL_PATH = "shared.server:HttpProtocol"
# uvicorn.Config attribute that carries explicit limits (trading serve, the gateway).
CONFIG_ATTRIBUTE = "trading_http_limits"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on how a request arrives."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> HttpLimits:
        """Return the limits a service's settings name."""
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            max_header_bytes=settings.http_max_header_bytes,
        )


@lru_cache(maxsize=1)
def _environment_limits() -> HttpLimits:
    """Return the limits from the environment (`uvicorn --http shared.server:HttpProtocol`)."""
    return HttpLimits.from_settings(BaseServiceSettings())


def uvicorn_options(settings: BaseServiceSettings) -> dict[str, Any]:
    """Return the uvicorn.Config keyword arguments that apply settings' server limits."""
    return {"http": HttpProtocol, "timeout_keep_alive": settings.http_keep_alive_s}


def _raw_problem(status: int, reason: str, title: str, code: str, detail: str) -> bytes:
    body = json.dumps(
        {"type": f"urn:problem:{code}", "title": title, "status": status, "detail": detail}
        | {"code": code}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts and a header size limit."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, CONFIG_ATTRIBUTE, None)
        self.limits: HttpLimits = limits if limits is not None else _environment_limits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # "idle" between requests, "head" while a request line and headers arrive, "body" after.
        self._phase = "idle"
        self._head_bytes = 0

    # -- timers
    def _arm_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _disarm(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        count_cut_connection("header_timeout")
        self.transport.write(
            _raw_problem(
                408,
                "Request Timeout",
                "Request timeout",
                "request_timeout",
                f"The request line and headers did not arrive within "
                f"{self.limits.header_timeout_s:g} s.",
            )
        )
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        count_cut_connection("body_timeout")
        log.info("cut a request whose body did not arrive within %gs", self.limits.body_timeout_s)
        self.transport.close()

    # -- protocol events
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection and the clock for its first request head."""
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks, then let uvicorn clean up."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser; refuse a head that grows past the size limit."""
        if self._phase != "body":
            self._arm_head()  # the first byte of a request after a keep-alive pause
            self._head_bytes += len(data)
        super().data_received(data)
        too_large = self._phase == "head" and self._head_bytes > self.limits.max_header_bytes
        if too_large and not self.transport.is_closing():
            count_cut_connection("header_too_large")
            self.transport.write(
                _raw_problem(
                    431,
                    "Request Header Fields Too Large",
                    "Request header fields too large",
                    "headers_too_large",
                    f"The request line and headers exceed {self.limits.max_header_bytes} bytes.",
                )
            )
            self.transport.close()

    def on_message_begin(self) -> None:
        """A request head starts."""
        self._phase = "head"
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """Stop the head clock; start the body clock."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._phase = "body"
        self._head_bytes = 0
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """Stop the body clock: the whole request has arrived."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._phase = "idle"
        self._head_bytes = 0
        super().on_message_complete()
