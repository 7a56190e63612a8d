"""Find the platform's services by convention: `services/<name>/app.py` with `create_app`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import services

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
