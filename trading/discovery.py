"""Find the platform's services by convention: `services/<name>/app.py` with `create_app`,
and `services/<name>/tables.py` with its `SCHEMA` (and its `RETENTION` rules, if any)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import services
from shared.migrate import Schema
from shared.retention import RetentionRule

AppFactory = Callable[..., Any]


def service_names() -> list[str]:
    """Return the name of every service package that has an `app.py`, sorted."""
    names: set[str] = set()
    for root in services.__path__:
        for app_py in Path(root).glob("*/app.py"):
            names.add(app_py.parent.name)
    return sorted(names)


def app_factory(name: str) -> AppFactory:
    """Return `services.<name>.app:create_app`."""
    module = importlib.import_module(f"services.{name}.app")
    factory = getattr(module, "create_app", None)
    if not callable(factory):
        raise ImportError(f"services.{name}.app has no create_app()")
    return factory  # type: ignore[no-any-return]


def service_apps() -> dict[str, Any]:
    """Return each service's app by name, built from environment settings."""
    return {name: app_factory(name)() for name in service_names()}


def _tables(name: str) -> Any | None:
    """Return `services.<name>.tables`, or None for a service with no tables."""
    if importlib.util.find_spec(f"services.{name}.tables") is None:
        return None
    return importlib.import_module(f"services.{name}.tables")


def service_schemas() -> list[Schema]:
    """Return the schema (tables and Alembic chain) of every service that has tables."""
    return [module.SCHEMA for name in service_names() if (module := _tables(name)) is not None]


def service_retention() -> list[RetentionRule]:
    """Return the retention rules every service declares for its tables."""
    modules = [module for name in service_names() if (module := _tables(name)) is not None]
    return [rule for module in modules for rule in getattr(module, "RETENTION", ())]
