"""Logging that never prints a secret: passwords in URLs, API keys, tokens are masked."""

from __future__ import annotations

import logging
import re
import sys

_PATTERNS = [
    # scheme://user:password@host -> scheme://user:***@host
    (
        re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)"),
        r"\g<pre>***\g<post>",
    ),
    # Authorization: Bearer xxx / Bearer xxx
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+"), r"\1***"),
    # A name holding KEY, TOKEN, SECRET or PASSWORD, prefixed or not (api_key=...,
    # ALPACA_SECRET_KEY=..., GATEWAY_TOKEN: ..., "postgres_password": "..."), then its value.
    (
        re.compile(
            r"(?i)(?<![A-Za-z0-9])([A-Za-z0-9_\-]{0,64}(?:key|token|secret|password|passwd|pwd)"
            r"[A-Za-z0-9_\-]{0,64}[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;]+"
        ),
        r"\1***",
    ),
]


def mask_secrets(text: str) -> str:
    """Return text with credentials replaced by ***."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Rewrite each record's message with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the fully formatted message in place."""
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class MaskingFormatter(logging.Formatter):
    """Format records as usual, then mask secrets in the whole text, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the formatted record (message, exception, stack) with secrets masked."""
        return mask_secrets(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr (never stdout: stdio MCP owns it), with secrets masked."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_trading", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._trading = True  # type: ignore[attr-defined]
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Per-request chatter of libraries stays out of INFO logs.
    for noisy in ("alembic", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
