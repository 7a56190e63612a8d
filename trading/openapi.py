"""Write each service's OpenAPI spec to openapi/<service>.json (`make openapi`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.config import REPO_ROOT
from trading.discovery import app_factory, service_names

OPENAPI_DIR = REPO_ROOT / "openapi"


def service_specs() -> dict[str, dict[str, Any]]:
    """Return each service's OpenAPI document, built from the apps themselves."""
    return {name: app_factory(name)().openapi() for name in service_names()}


def render(spec: dict[str, Any]) -> str:
    """Return a spec as stable, diff-friendly JSON text."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_specs(directory: Path = OPENAPI_DIR) -> list[Path]:
    """Write every spec; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in service_specs().items():
        path = directory / f"{name}.json"
        path.write_text(render(spec), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_specs():
        sys.stdout.write(f"wrote {p.relative_to(REPO_ROOT)}\n")
