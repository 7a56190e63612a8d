"""The model registry: semantic versions in `model_states`, the active one in Redis too.

Each training makes a new version of a named model: a minor bump (`1.0.0`, `1.1.0`, ...), a
major bump when what the model reads or says changes (features, members, horizon, label
band), and an accepted online update a patch bump of the version it updated (`1.1.1`). A
version's bytes are one zip of the model's portable artifacts (`state.json`, `lstm.keras`,
`xgboost.ubj`; no pickle). Only the newest `keep` versions keep their bytes; older ones are
archived (metadata kept, bytes deleted) so a version number is never reused.

The active version is `model_states.is_active` (the truth) and, when Redis is configured,
the string key `model:active:{model}` (no TTL) that every process reads. When Redis is empty
or down the database answers and the key is written back. Without Redis a process trusts
its own copy for `refresh_s` seconds. Loaded models are kept in memory (least recently used
ones unloaded); a version's bytes never change, so a loaded version is never stale.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from services.predictor import repository as repo
from services.predictor.errors import ModelNotFoundError, VersionNotFoundError
from services.predictor.ml.training import EnsembleModel
from shared.cache import Cache
from shared.db import Database
from shared.memory import release_free_memory
from shared.tables import utcnow

log = logging.getLogger(__name__)

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# What a model reads and says: a change here is a major version.
INTERFACE_KEYS = ("feature_names", "models", "horizon", "band", "vol_window")


def pack(artifacts: Mapping[str, bytes]) -> bytes:
    """Return the artifacts as one zip (sorted entries, fixed dates: same input, same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(artifacts):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            archive.writestr(info, artifacts[name])
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, bytes]:
    """Return the artifacts of a zip made by :func:`pack`."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def parse_version(text: str) -> tuple[int, int, int]:
    """Return (major, minor, patch) of `MAJOR.MINOR.PATCH`."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def next_version(
    existing: Iterable[str],
    *,
    kind: Literal["trained", "online_update"],
    base: str | None = None,
    breaking: bool = False,
) -> str:
    """Return the next free version: training bumps minor (major if breaking), updates patch."""
    known = [parse_version(v) for v in existing]
    if kind == "online_update":
        if base is None:
            raise ValueError("an online update needs the version it updates")
        major, minor, _ = parse_version(base)
        patch = max((p for a, b, p in known if (a, b) == (major, minor)), default=0)
        return f"{major}.{minor}.{patch + 1}"
    if not known:
        return "1.0.0"
    major, minor, _ = max(known)
    return f"{major + 1}.0.0" if breaking else f"{major}.{minor + 1}.0"


def interface(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a version reads and says (features, members, horizon, label band)."""
    config = hyperparameters.get("config", {})
    return {
        "feature_names": hyperparameters.get("feature_names"),
        "models": sorted(config.get("models", [])),
        "horizon": config.get("horizon"),
        "band": config.get("band"),
        "vol_window": config.get("vol_window"),
    }


@dataclass(frozen=True)
class Added:
    """A version just stored."""

    version: str
    previous_active: str | None
    active: bool
    archived: list[str]


class Registry:
    """Store, list, activate and load versions of named models."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        *,
        keep: int = 5,
        refresh_s: float = 2.0,
        loaded: int = 4,
    ) -> None:
        self.db = db
        self.cache = cache
        self.keep = keep
        self.refresh_s = refresh_s
        self.loaded_size = loaded
        self._active: dict[str, tuple[str, float]] = {}  # without Redis: model -> (version, t)
        self._models: OrderedDict[tuple[str, str], EnsembleModel] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        self._write = asyncio.Lock()
        self._redis_down = False
        self._preloading: set[asyncio.Task[str | None]] = set()

    # ---- the active version ----------------------------------------------------------

    def _active_key(self, model: str) -> str:
        return f"{self.cache.prefix}model:active:{model}"

    def _redis_failed(self, e: Exception) -> None:
        if not self._redis_down:
            log.warning("Redis unavailable for active versions (%s): using the database", e)
        self._redis_down = True

    async def _redis_get(self, model: str) -> str | None:
        if self.cache.redis is None:
            return None
        try:
            value = await self.cache.redis.get(self._active_key(model))
        except (RedisError, OSError) as e:
            self._redis_failed(e)
            return None
        self._redis_down = False
        return str(value) if value else None

    async def _publish(self, model: str, version: str) -> None:
        """Remember version as model's active one here and in Redis."""
        self._active[model] = (version, time.monotonic())
        if self.cache.redis is None:
            return
        try:
            await self.cache.redis.set(self._active_key(model), version)
        except (RedisError, OSError) as e:
            self._redis_failed(e)

    async def active_from_db(self, model: str) -> str:
        """Return the active version from the database and write it back to Redis."""
        async with self.db.session() as session:
            version = await repo.active_version(session, model_name=model)
        if version is None:
            raise ModelNotFoundError(
                f"No model {model!r} has been trained yet: POST /train first.", field="model"
            )
        await self._publish(model, version)
        return version

    async def active_version(self, model: str) -> str:
        """Return the active version of a model (Redis, else the database)."""
        if self.cache.redis is not None:
            version = await self._redis_get(model)
            if version is not None:
                return version
        else:
            mine = self._active.get(model)
            if mine is not None and time.monotonic() - mine[1] < self.refresh_s:
                return mine[0]
        return await self.active_from_db(model)

    # ---- metadata ----------------------------------------------------------------------

    async def rows(self, model: str) -> list[repo.VersionRow]:
        """Return every version row of a model, newest first (ModelNotFoundError if none)."""
        async with self.db.session() as session:
            rows = await repo.versions(session, model_name=model)
        if not rows:
            raise ModelNotFoundError(f"No model {model!r} has been trained yet.", field="model")
        return rows

    async def row(
        self, model: str, version: str, *, field: str = "version", kept: bool = True
    ) -> repo.VersionRow:
        """Return one version's row (VersionNotFoundError if unknown, or archived when kept)."""
        async with self.db.session() as session:
            row = await repo.version(session, model_name=model, version=version)
        if row is None or (kept and not row.has_data):
            await self.rows(model)  # an unknown model is a 404 naming `model`
            why = "was archived (its weights are deleted)" if row is not None else "does not exist"
            raise VersionNotFoundError(
                f"Version {version} of model {model!r} {why}; GET /model_info lists the kept "
                "versions.",
                field=field,
            )
        return row

    async def set_training_metrics(self, model: str, version: str, metrics: dict[str, Any]) -> None:
        """Replace a version's evaluation and lineage document."""
        async with self.db.session() as session:
            await repo.set_training_metrics(
                session, model_name=model, version=version, training_metrics=metrics
            )
            await session.commit()

    # ---- writing -----------------------------------------------------------------------

    async def add(
        self,
        model: str,
        *,
        artifacts: Mapping[str, bytes],
        hyperparameters: dict[str, Any],
        training_metrics: dict[str, Any],
        data_start: datetime | None,
        data_end: datetime | None,
        kind: Literal["trained", "online_update"],
        base: str | None = None,
        activate: bool = True,
    ) -> Added:
        """Store a new version (numbered here), activate it if asked, archive old bytes.

        A version made active is loaded into memory in the background, so the first
        `/predict` after a training does not pay for it.
        """
        blob = await asyncio.to_thread(pack, artifacts)
        async with self._write:
            for attempt in range(5):
                try:
                    added = await self._add_once(
                        model,
                        blob,
                        hyperparameters,
                        training_metrics,
                        data_start,
                        data_end,
                        kind,
                        base,
                        activate,
                    )
                except IntegrityError:  # another process took the number: count again
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                if added.active:
                    self.preload(model)
                return added
        raise AssertionError("unreachable")

    def preload(self, model: str) -> None:
        """Load the model's active version in the background (see :func:`preload_active`)."""
        task = asyncio.create_task(preload_active(self, model), name=f"preload-{model}")
        self._preloading.add(task)
        task.add_done_callback(self._preloading.discard)

    async def aclose(self) -> None:
        """Stop background loads (a load already in its thread finishes there)."""
        for task in list(self._preloading):
            task.cancel()
        await asyncio.gather(*self._preloading, return_exceptions=True)

    async def _add_once(
        self,
        model: str,
        blob: bytes,
        hyperparameters: dict[str, Any],
        training_metrics: dict[str, Any],
        data_start: datetime | None,
        data_end: datetime | None,
        kind: Literal["trained", "online_update"],
        base: str | None,
        activate: bool,
    ) -> Added:
        async with self.db.session() as session:
            rows = await repo.versions(session, model_name=model)
            previous = next((r.version for r in rows if r.is_active), None)
            newest = rows[0] if rows else None
            breaking = newest is not None and interface(newest.hyperparameters) != interface(
                hyperparameters
            )
            version = next_version(
                [r.version for r in rows], kind=kind, base=base, breaking=breaking
            )
            await repo.insert_version(
                session,
                model_name=model,
                version=version,
                data=blob,
                hyperparameters=hyperparameters,
                training_metrics=training_metrics,
                data_start=data_start,
                data_end=data_end,
                created_at=utcnow(),
            )
            active = activate or previous is None
            if active:
                await repo.set_active(session, model_name=model, version=version)
            archived = await repo.archive(session, model_name=model, keep=self.keep)
            await session.commit()
        if active:
            await self._publish(model, version)
        for old in archived:
            self._models.pop((model, old), None)
        log.info("model %s: stored version %s (%s)%s", model, version, kind, " active" * active)
        return Added(version, previous, active, archived)

    async def activate(self, model: str, version: str) -> str:
        """Make a kept version the active one; return the version active before."""
        await self.row(model, version)
        async with self._write, self.db.session() as session:
            previous = await repo.active_version(session, model_name=model)
            if not await repo.set_active(session, model_name=model, version=version):
                raise VersionNotFoundError(
                    f"Version {version} of model {model!r} is not kept.", field="version"
                )
            await session.commit()
        await self._publish(model, version)
        return previous or version

    # ---- loading -----------------------------------------------------------------------

    def loaded(self) -> list[str]:
        """Return `model@version` of the versions held in memory."""
        return [f"{m}@{v}" for m, v in self._models]

    async def load(self, model: str, version: str) -> EnsembleModel:
        """Return a version's model, loading its bytes once (in a thread) on first use."""
        key = (model, version)
        hit = self._models.get(key)
        if hit is not None:
            self._models.move_to_end(key)
            return hit
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._models.get(key)
            if hit is None:
                async with self.db.session() as session:
                    blob = await repo.model_data(session, model_name=model, version=version)
                if blob is None:
                    raise VersionNotFoundError(
                        f"Version {version} of model {model!r} is not kept.", field="version"
                    )
                hit = await asyncio.to_thread(_load, blob)
                self._models[key] = hit
                while len(self._models) > self.loaded_size:
                    self._models.popitem(last=False)
        self._loading.pop(key, None)
        return hit


async def preload_active(registry: Registry, model: str = "default") -> str | None:
    """Load a model's active version into memory ahead of the first `/predict`.

    A fresh process's first prediction otherwise pays for reading the version, importing
    XGBoost (and scikit-learn with it) and loading the LSTM's kernels: 1.8 s of a 2 s budget
    on two idle cores. Returns the version loaded, None when the model has none yet (then
    nothing is imported) or when loading failed (logged; the first request retries).
    """
    try:
        version = await registry.active_version(model)
        await registry.load(model, version)
    except ModelNotFoundError:
        return None
    except Exception as e:  # a store outage at start: the first request loads it instead
        log.warning("model %s not preloaded (%s: %s)", model, type(e).__name__, e)
        return None
    return version


def _load(blob: bytes) -> EnsembleModel:
    """Rebuild a model from its stored zip (the LSTM predicts in numpy: no TensorFlow).

    prepare() loads the LSTM's numba kernels (compiled once per install, cached on disk).
    """
    model = EnsembleModel.from_artifacts(unpack(blob))
    model.prepare(wait=False)
    release_free_memory()  # the zip, the HDF5 reader and the parse buffers are garbage now
    return model
