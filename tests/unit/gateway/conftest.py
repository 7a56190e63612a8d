"""Fixtures of the gateway's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the embedded services at tmp_path for state and at the shared CSV data."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MARKET_PROVIDERS", "csv")
    return tmp_path
