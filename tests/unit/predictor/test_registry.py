"""The model registry: version numbers, portable bytes, archiving, the active version."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from services.predictor.errors import ModelNotFoundError, VersionNotFoundError
from services.predictor.registry import (
    Registry,
    interface,
    next_version,
    pack,
    parse_version,
    unpack,
)
from services.predictor.tables import SCHEMA
from shared.cache import Cache
from shared.db import Database

HYPER = {
    "config": {"models": ["lstm", "xgboost"], "horizon": 1, "band": 0.5, "vol_window": 21},
    "feature_names": ["a", "b"],
}


def test_artifacts_pack_into_one_deterministic_zip() -> None:
    artifacts = {"xgboost.ubj": b"\x00\x01trees", "state.json": b"{}", "lstm.keras": b"PK.."}
    blob = pack(artifacts)
    assert blob == pack(dict(reversed(list(artifacts.items()))))  # same input, same bytes
    assert blob[:2] == b"PK" and unpack(blob) == artifacts
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert archive.namelist() == sorted(artifacts)
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize(
    ("existing", "kwargs", "expected"),
    [
        ([], {"kind": "trained"}, "1.0.0"),
        (["1.0.0"], {"kind": "trained"}, "1.1.0"),
        (["1.0.0", "1.1.0", "1.1.1"], {"kind": "trained"}, "1.2.0"),
        (["1.0.0", "1.2.0"], {"kind": "trained", "breaking": True}, "2.0.0"),
        (["1.0.0", "1.1.0", "1.1.1"], {"kind": "online_update", "base": "1.1.0"}, "1.1.2"),
        (["1.0.0", "1.1.0", "1.1.1"], {"kind": "online_update", "base": "1.0.0"}, "1.0.1"),
        (["1.9.0", "1.10.0"], {"kind": "trained"}, "1.11.0"),  # numeric, not text, order
    ],
)
def test_versions_are_semantic(existing: list[str], kwargs: dict[str, Any], expected: str) -> None:
    assert next_version(existing, **kwargs) == expected


def test_a_version_must_be_three_numbers() -> None:
    assert parse_version("10.2.3") == (10, 2, 3)
    for bad in ("1.2", "1.2.x", "v1.2.3", "1.2.3.4"):
        with pytest.raises(ValueError):
            parse_version(bad)
    with pytest.raises(ValueError):
        next_version(["1.0.0"], kind="online_update")


def test_the_interface_is_what_the_model_reads_and_says() -> None:
    same = {**HYPER, "config": {**HYPER["config"], "seed": 9, "lstm": {"epochs": 3}}}
    assert interface(same) == interface(HYPER)
    for change in (
        {"feature_names": ["a"]},
        {"config": {**HYPER["config"], "horizon": 5}},
        {"config": {**HYPER["config"], "models": ["xgboost"]}},
        {"config": {**HYPER["config"], "band": 1.0}},
    ):
        assert interface({**HYPER, **change}) != interface(HYPER)


async def _registry(path: Path, **kwargs: Any) -> Registry:
    db = Database(f"sqlite+aiosqlite:///{path / 'registry.db'}")
    await db.migrate(SCHEMA)
    return Registry(db, Cache(), **kwargs)


async def _add(registry: Registry, **kwargs: Any) -> Any:
    values: dict[str, Any] = {
        "artifacts": {"state.json": b"{}"},
        "hyperparameters": HYPER,
        "training_metrics": {"kind": "trained"},
        "data_start": None,
        "data_end": None,
        "kind": "trained",
    }
    values.update(kwargs)
    return await registry.add("m", **values)


def test_old_versions_lose_their_bytes_but_never_the_active_one(tmp_path: Path) -> None:
    async def go() -> None:
        registry = await _registry(tmp_path, keep=2, refresh_s=0.0)
        try:
            with pytest.raises(ModelNotFoundError):
                await registry.active_version("m")
            v1 = await _add(registry)
            assert (v1.version, v1.previous_active, v1.active) == ("1.0.0", None, True)
            v2 = await _add(registry, activate=False)
            assert (v2.version, v2.active) == ("1.1.0", False)
            assert await registry.active_version("m") == "1.0.0"
            v3 = await _add(registry, activate=False)
            assert v3.archived == []  # 1.0.0 is beyond the two kept, but active
            v4 = await _add(registry)
            assert (v4.version, v4.previous_active) == ("1.3.0", "1.0.0")
            assert sorted(v4.archived) == ["1.0.0", "1.1.0"]
            rows = await registry.rows("m")
            assert [(r.version, r.has_data, r.is_active) for r in rows] == [
                ("1.3.0", True, True),
                ("1.2.0", True, False),
                ("1.1.0", False, False),
                ("1.0.0", False, False),
            ]
            with pytest.raises(VersionNotFoundError, match="archived"):
                await registry.activate("m", "1.0.0")
            assert await registry.activate("m", "1.2.0") == "1.3.0"
            assert await registry.active_version("m") == "1.2.0"
            breaking = await _add(registry, hyperparameters={**HYPER, "feature_names": ["z"]})
            assert breaking.version == "2.0.0"
            patch = await _add(registry, kind="online_update", base="1.2.0")
            assert patch.version == "1.2.1"
        finally:
            await registry.db.dispose()

    asyncio.run(go())


def test_concurrent_trainings_get_distinct_numbers(tmp_path: Path) -> None:
    async def go() -> list[str]:
        registry = await _registry(tmp_path)
        try:
            added = await asyncio.gather(*(_add(registry) for _ in range(3)))
            return sorted(a.version for a in added)
        finally:
            await registry.db.dispose()

    assert asyncio.run(go()) == ["1.0.0", "1.1.0", "1.2.0"]


def test_another_process_activation_is_seen_after_the_refresh(tmp_path: Path) -> None:
    async def go() -> tuple[str, str, str]:
        mine = await _registry(tmp_path, refresh_s=60.0)
        other = Registry(mine.db, Cache(), refresh_s=60.0)  # another process, same database
        try:
            await _add(mine)
            await _add(mine)
            seen = await mine.active_version("m")
            await other.activate("m", "1.0.0")
            cached = await mine.active_version("m")  # trusted for refresh_s without Redis
            mine.refresh_s = 0.0
            return seen, cached, await mine.active_version("m")
        finally:
            await mine.db.dispose()

    assert asyncio.run(go()) == ("1.1.0", "1.1.0", "1.0.0")
