"""`trading prune` on PostgreSQL: the same seeded rows and checks as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.shared.test_retention import check_prune


def test_prune_applies_each_retention_on_postgresql(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_prune(pg_url, tmp_path, monkeypatch)
