"""Two-level cache: L1 in-process LRU in front of L2 Redis (the database is L3).

:class:`Cache` stores JSON-serialisable values under ``<prefix><key>``. :class:`ModelCache`
is the typed layer services use for their answers: it stores frozen pydantic models, keys
them ``<key>:v<schema version>`` where the version is a digest of the model's JSON schemas
(:func:`schema_version`), so a deploy whose answer shape differs never reads an entry written
by the old one and nobody has to remember to bump a number. L1 holds the frozen instance
itself; a reader that wants other values derives a copy (``model_copy(update=...)``), so a
cached entry is never mutated in place.

If Redis is configured but down, every call still answers from L1 (and the caller falls
through to the database); the outage is logged once, then once more when Redis is back.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import types
import typing
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.logging import mask_secrets
from shared.metrics import observe_cache

log = logging.getLogger(__name__)

CacheLevel = Literal["l1", "l2"]
M = TypeVar("M", bound=BaseModel)

# The Redis hash field that holds the whole JSON answer beside the plain, readable fields.
JSON_FIELD = "__json__"
# Answers larger than this (JSON characters) are parsed in a worker thread.
_THREAD_BYTES = 64 * 1024


class LRUCache:
    """A bounded mapping with per-entry expiry; the least recently used entry goes first.

    Bounded twice: by entry count and by an estimate of the bytes held (the JSON size of each
    value, given by the caller), so 1,000 twenty-year histories cannot exhaust memory.
    """

    def __init__(self, maxsize: int = 1000, max_bytes: int = 256 * 2**20) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()

    def get(self, key: str) -> Any | None:
        """Return the live value for key, or None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value, _ = hit
        if expires < time.monotonic():
            self.delete(key)
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: Any, ttl_s: float, size: int = 0) -> None:
        """Store value for ttl_s seconds, evicting the oldest entries while over a bound."""
        self.delete(key)
        if size > self.max_bytes:
            return
        self._data[key] = (time.monotonic() + ttl_s, value, size)
        self.bytes += size
        while len(self._data) > self.maxsize or self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._data.popitem(last=False)
            self.bytes -= dropped

    def delete(self, key: str) -> None:
        """Forget key."""
        hit = self._data.pop(key, None)
        if hit is not None:
            self.bytes -= hit[2]

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)


class Cache:
    """L1 LRU + optional L2 Redis with graceful degradation."""

    RETRY_AFTER_S = 5.0

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        prefix: str = "",
        l1_size: int = 1000,
        l1_max_bytes: int = 256 * 2**20,
        timeout_s: float = 0.5,
    ) -> None:
        self.l1 = LRUCache(l1_size, l1_max_bytes)
        self.prefix = prefix
        self.redis_url = redis_url
        self.redis: Redis | None = None
        if redis_url:
            self.redis = Redis.from_url(
                redis_url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
                decode_responses=True,
            )
        self._down_since: float | None = None

    @property
    def l2_available(self) -> bool:
        """Tell whether Redis is configured and not known to be down."""
        return self.redis is not None and self._down_since is None

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _skip_l2(self) -> bool:
        if self.redis is None:
            return True
        if self._down_since is None:
            return False
        return time.monotonic() - self._down_since < self.RETRY_AFTER_S

    def _l2_failed(self, e: Exception) -> None:
        if self._down_since is None:
            log.warning(
                "Redis %s unavailable (%s): serving from L1 and the database until it is back",
                mask_secrets(self.redis_url or ""),
                type(e).__name__,
            )
        self._down_since = time.monotonic()

    def _l2_ok(self) -> None:
        if self._down_since is not None:
            log.warning("Redis %s is back", mask_secrets(self.redis_url or ""))
            self._down_since = None

    async def _l2_get(self, key: str, *, as_hash: bool) -> tuple[str | None, int]:
        """Return (raw JSON, remaining TTL in s) of key in Redis; (None, 0) on a miss or outage."""
        if self._skip_l2():
            return None, 0
        assert self.redis is not None
        try:
            pipe = self.redis.pipeline(transaction=False)
            if as_hash:
                pipe.hget(self._key(key), JSON_FIELD)
            else:
                pipe.get(self._key(key))
            pipe.ttl(self._key(key))
            raw, ttl = await pipe.execute()
        except (RedisError, OSError) as e:
            self._l2_failed(e)
            return None, 0
        self._l2_ok()
        observe_cache("l2", raw is not None)
        return raw, int(ttl or 0)

    async def _l2_set(
        self, key: str, payload: str, ttl_s: int, hash_fields: Mapping[str, Any] | None
    ) -> None:
        """Write payload to Redis for ttl_s seconds, as a hash with hash_fields when given."""
        if self._skip_l2():
            return
        assert self.redis is not None
        try:
            if hash_fields is not None:
                mapping: dict[str | bytes, str] = {
                    k: "" if v is None else str(v) for k, v in hash_fields.items()
                }
                mapping[JSON_FIELD] = payload
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(self._key(key))
                pipe.hset(self._key(key), mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(self._key(key), ttl_s)
                await pipe.execute()
            else:
                await self.redis.set(self._key(key), payload, ex=ttl_s)
        except (RedisError, OSError) as e:
            self._l2_failed(e)
            return
        self._l2_ok()

    async def get(self, key: str, *, as_hash: bool = False) -> tuple[Any | None, CacheLevel | None]:
        """Return (value, level) from L1 then L2, or (None, None)."""
        value = self.l1.get(key)
        observe_cache("l1", value is not None)
        if value is not None:
            return value, "l1"
        raw, ttl = await self._l2_get(key, as_hash=as_hash)
        if raw is None:
            return None, None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("dropping undecodable cache entry %s", key)
            return None, None
        if value is None:
            return None, None
        if ttl > 0:
            self.l1.set(key, value, ttl, size=len(raw))
        return value, "l2"

    async def set(
        self, key: str, value: Any, ttl_s: int, *, hash_fields: dict[str, Any] | None = None
    ) -> None:
        """Store value in L1 and L2 for ttl_s seconds (as a Redis hash when fields are given)."""
        # Serialise off the event loop: a 20-year history is several megabytes of JSON.
        payload = await asyncio.to_thread(json.dumps, value, separators=(",", ":"), default=str)
        self.l1.set(key, value, ttl_s, size=len(payload))
        await self._l2_set(key, payload, ttl_s, hash_fields)

    async def delete(self, key: str) -> None:
        """Forget key in both levels."""
        self.l1.delete(key)
        if self._skip_l2():
            return
        assert self.redis is not None
        try:
            await self.redis.delete(self._key(key))
        except (RedisError, OSError) as e:
            self._l2_failed(e)

    async def ping(self) -> bool | None:
        """Return True/False for Redis reachability, None when Redis is not configured."""
        if self.redis is None:
            return None
        try:
            await self.redis.ping()
        except (RedisError, OSError) as e:
            self._l2_failed(e)
            return False
        self._l2_ok()
        return True

    async def aclose(self) -> None:
        """Close the Redis pool."""
        if self.redis is not None:
            await self.redis.aclose()


@functools.cache
def schema_version(model: type[BaseModel]) -> str:
    """Return a digest of a model's validation and serialization JSON schemas (12 hex digits).

    Any change to the answer's shape (a field added, renamed, retyped, re-documented, in the
    model or in a model it nests) gives another version.
    """
    schemas = [model.model_json_schema(mode=mode) for mode in ("validation", "serialization")]
    text = json.dumps(schemas, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _unfrozen_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    """Return the names of models reachable from model's fields that are not frozen."""
    if model in seen:
        return []
    seen.add(model)
    bad = [] if model.model_config.get("frozen") else [model.__name__]
    stack: list[Any] = [field.annotation for field in model.model_fields.values()]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            bad += _unfrozen_models(tp, seen)
        elif isinstance(tp, types.UnionType | types.GenericAlias) or typing.get_origin(tp):
            stack.extend(typing.get_args(tp))
    return bad


class ModelCache(Generic[M]):
    """Cache one kind of answer, a frozen pydantic model, in L1 and L2 under versioned keys.

    ``hash_fields`` stores the entry in Redis as a hash: those fields of the model's JSON form
    as plain strings (readable by any Redis client) beside the whole JSON answer.
    """

    def __init__(self, cache: Cache, model: type[M], *, hash_fields: Sequence[str] = ()) -> None:
        unfrozen = _unfrozen_models(model, set())
        if unfrozen:
            raise TypeError(
                f"{model.__name__} is cached, so it and the models it nests must be frozen "
                f"(model_config = ConfigDict(frozen=True)): {', '.join(unfrozen)}"
            )
        unknown = [f for f in hash_fields if f not in model.model_fields]
        if unknown:
            raise ValueError(f"{model.__name__} has no fields {unknown}")
        self.cache = cache
        self.model = model
        self.hash_fields = tuple(hash_fields)
        self.version = schema_version(model)

    def key(self, key: str) -> str:
        """Return the key as stored (without the cache's prefix): ``<key>:v<version>``."""
        return f"{key}:v{self.version}"

    async def get(self, key: str) -> tuple[M | None, CacheLevel | None]:
        """Return (answer, level) from L1 then L2, or (None, None); never a mutable entry."""
        full = self.key(key)
        hit = self.cache.l1.get(full)
        observe_cache("l1", isinstance(hit, self.model))
        if isinstance(hit, self.model):
            return hit, "l1"
        raw, ttl = await self.cache._l2_get(full, as_hash=bool(self.hash_fields))
        if raw is None:
            return None, None
        try:
            if len(raw) > _THREAD_BYTES:  # a long history: parse it off the event loop
                value = await asyncio.to_thread(self.model.model_validate_json, raw)
            else:
                value = self.model.model_validate_json(raw)
        except ValidationError:
            log.warning("dropping cache entry %s that does not fit %s", full, self.model.__name__)
            return None, None
        if ttl > 0:
            self.cache.l1.set(full, value, ttl, size=len(raw))
        return value, "l2"

    async def set(self, key: str, value: M, ttl_s: int) -> None:
        """Store the answer in L1 and L2 for ttl_s seconds."""
        if type(value) is not self.model:
            raise TypeError(f"expected {self.model.__name__}, got {type(value).__name__}")
        full = self.key(key)
        # Serialise off the event loop: a 20-year history is several megabytes of JSON.
        payload = await asyncio.to_thread(value.model_dump_json, by_alias=True)
        self.cache.l1.set(full, value, ttl_s, size=len(payload))
        fields = None
        if self.hash_fields:
            fields = value.model_dump(mode="json", include=set(self.hash_fields))
        await self.cache._l2_set(full, payload, ttl_s, fields)
