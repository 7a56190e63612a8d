"""Two-level cache: L1 in-process LRU in front of L2 Redis (the database is L3).

:class:`Cache` stores JSON-serialisable values under ``<prefix><key>``. :class:`ModelCache`
is the typed layer services use for their answers: it stores frozen pydantic models, keys
them ``<key>:v<schema version>`` where the version is a digest of the model's JSON schemas
(:func:`schema_version`), so a deploy whose answer shape differs never reads an entry written
by the old one and nobody has to remember to bump a number. L1 holds the frozen instance
itself; a reader that wants other values derives a copy (``model_copy(update=...)``), so a
cached entry is never mutated in place.

``ModelCache.get_or_compute`` is the read path services use: one computation per key at a
time (:class:`shared.singleflight.SingleFlight`; the others wait for it), and, where the
caller allows it, an expired entry is served for up to ``stale_s`` more seconds while one
background task refreshes it (and an entry about to expire is refreshed ahead, ``early_s``),
so an expiry under load costs nobody a wait.

Redis connections come from a pool that waits (``redis_pool_timeout_s``) for a free
connection instead of failing: a full pool is load, not an outage, and is never logged as
one. If Redis is really down (connection refused or reset, or timeouts with no success for
``TIMEOUT_GRACE_S``), every call
still answers from L1 (and the caller falls through to the database); the outage is logged
once, then once more when Redis is back (a :class:`shared.breaker.CircuitBreaker` skips
Redis for ``RETRY_AFTER_S`` between probes).
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from shared.breaker import BreakerState, CircuitBreaker, Permit
from shared.config import BaseServiceSettings
from shared.logging import mask_secrets
from shared.metrics import observe_cache, publish_breaker
from shared.singleflight import SingleFlight

log = logging.getLogger(__name__)

CacheLevel = Literal["l1", "l2"]
M = TypeVar("M", bound=BaseModel)

# The Redis hash field that holds the whole JSON answer beside the plain, readable fields.
JSON_FIELD = "__json__"
# Answers larger than this (JSON characters) are parsed in a worker thread.
_THREAD_BYTES = 64 * 1024


class Entry(NamedTuple):
    """An L1 entry: the value and when it expires (on the cache's clock)."""

    value: Any
    expires: float


class LRUCache:
    """A bounded mapping with per-entry expiry; the least recently used entry goes first.

    Bounded twice: by entry count and by an estimate of the bytes held (the JSON size of each
    value, given by the caller), so 1,000 twenty-year histories cannot exhaust memory. An
    entry stored with ``stale_s`` is kept that much longer after it expires, for
    :meth:`peek` (stale-while-revalidate); :meth:`get` only returns live entries.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        max_bytes: int = 256 * 2**20,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        # key -> (expires, kept until, value, size)
        self._data: OrderedDict[str, tuple[float, float, Any, int]] = OrderedDict()

    def peek(self, key: str) -> Entry | None:
        """Return the entry for key, expired or not, while it is kept; else None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, kept_until, value, _ = hit
        if kept_until <= self.clock():
            self.delete(key)
            return None
        self._data.move_to_end(key)
        return Entry(value, expires)

    def get(self, key: str) -> Any | None:
        """Return the live value for key, or None."""
        entry = self.peek(key)
        if entry is None or entry.expires <= self.clock():
            return None
        return entry.value

    def set(self, key: str, value: Any, ttl_s: float, size: int = 0, stale_s: float = 0) -> None:
        """Store value for ttl_s seconds (kept stale_s more), evicting while over a bound."""
        self.delete(key)
        if size > self.max_bytes:
            return
        expires = self.clock() + ttl_s
        self._data[key] = (expires, expires + max(0.0, stale_s), value, size)
        self.bytes += size
        while len(self._data) > self.maxsize or self.bytes > self.max_bytes:
            _, (_, _, _, dropped) = self._data.popitem(last=False)
            self.bytes -= dropped

    def delete(self, key: str) -> None:
        """Forget key."""
        hit = self._data.pop(key, None)
        if hit is not None:
            self.bytes -= hit[3]

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)


class WaitingConnectionPool(BlockingConnectionPool):
    """A Redis pool that waits up to `timeout` for a free connection, then raises
    MaxConnectionsError (never a plain ConnectionError, which would read as an outage)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """Return a pooled connection, waiting for one while all are in use."""
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as e:
            if isinstance(e.__cause__, TimeoutError):  # waited `timeout` for a free one
                raise MaxConnectionsError(
                    f"all {self.max_connections} Redis connections busy for {self.timeout} s"
                ) from e
            raise


class Cache:
    """L1 LRU + optional L2 Redis with graceful degradation."""

    RETRY_AFTER_S = 5.0  # while Redis is down, probe it again after this long
    TIMEOUTS_BEFORE_DOWN = 3  # consecutive timeouts that mean "down" (a refusal is at once)
    # A timeout within this long of a success is not counted: a saturated event loop (or a
    # Redis stall) delays answers without Redis being gone.
    TIMEOUT_GRACE_S = 2.0
    REFRESH_RETRY_S = 2.0  # after a failed background refresh, serve stale this long first

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        prefix: str = "",
        l1_size: int = 1000,
        l1_max_bytes: int = 256 * 2**20,
        timeout_s: float = 0.5,
        max_connections: int = 50,
        pool_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.l1 = LRUCache(l1_size, l1_max_bytes, clock=clock)
        self.prefix = prefix
        self.redis_url = redis_url
        self.redis: Redis | None = None
        self.flights: SingleFlight[Any] = SingleFlight()
        self.busy = 0  # Redis calls skipped because every pooled connection stayed in use
        self.slow = 0  # Redis calls that timed out soon after a success (not counted as down)
        self._last_ok = clock()
        # key -> (clock time of the last failed background refresh, failures in a row)
        self.refresh_failures: dict[str, tuple[float, int]] = {}
        self.breaker = CircuitBreaker(
            "redis",
            failure_threshold=self.TIMEOUTS_BEFORE_DOWN,
            cooldown_s=self.RETRY_AFTER_S,
            clock=clock,
            on_change=self._breaker_changed,
        )
        if redis_url:
            pool = WaitingConnectionPool.from_url(
                redis_url,
                max_connections=max_connections,
                timeout=pool_timeout_s,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
                decode_responses=True,
                # One immediate retry on a fresh connection when a pooled one turns out closed
                # (a restarted server); no backoff: the cache degrades, it never waits.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self.redis = Redis.from_pool(pool)

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Cache:
        """Return the cache a service's settings describe (Redis URL, prefix, bounds)."""
        return cls(
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            l1_size=settings.l1_cache_size,
            l1_max_bytes=settings.l1_cache_max_mb * 2**20,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )

    @property
    def l2_available(self) -> bool:
        """Tell whether Redis is configured and not known to be down."""
        return self.redis is not None and self.breaker.state == "closed"

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _permit(self) -> Permit | None:
        """Return leave to call Redis now, or None (not configured, or down and not probing)."""
        if self.redis is None:
            return None
        return self.breaker.allow()

    def _l2_failed(self, e: Exception, permit: Permit | None) -> None:
        if isinstance(e, MaxConnectionsError):  # our pool is busy: load, not an outage
            self.busy += 1
            self.breaker.release(permit)
            return
        # Refused or reset connections are an outage; a timeout may be a busy event loop,
        # so only a run of them with no success for TIMEOUT_GRACE_S is.
        fatal = isinstance(e, RedisConnectionError | ConnectionError)
        if not fatal and self.clock() - self._last_ok < self.TIMEOUT_GRACE_S:
            self.slow += 1
            self.breaker.release(permit)
            return
        self._last_error = type(e).__name__
        self.breaker.failure(permit, fatal=fatal)

    def _l2_ok(self, permit: Permit | None) -> None:
        self._last_ok = self.clock()
        self.breaker.success(permit)

    def _breaker_changed(
        self, breaker: CircuitBreaker, old: BreakerState, new: BreakerState
    ) -> None:
        publish_breaker(breaker, old, new)  # circuit_breaker_state{breaker="redis"}
        url = mask_secrets(self.redis_url or "")
        if new == "open" and old == "closed":
            log.warning(
                "Redis %s unavailable (%s): serving from L1 and the database until it is back",
                url,
                getattr(self, "_last_error", "error"),
            )
            if self.redis is not None:  # idle pooled sockets are dead too: reconnect later
                closing = asyncio.ensure_future(
                    self.redis.connection_pool.disconnect(inuse_connections=False)
                )
                closing.add_done_callback(lambda t: t.cancelled() or t.exception())
        elif new == "closed":
            log.warning("Redis %s is back", url)

    async def _l2_get(self, key: str, *, as_hash: bool) -> tuple[str | None, int]:
        """Return (raw JSON, remaining TTL in s) of key in Redis; (None, 0) on a miss or outage."""
        permit = self._permit()
        if permit is None:
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
            self._l2_failed(e, permit)
            return None, 0
        except BaseException:
            self.breaker.release(permit)
            raise
        self._l2_ok(permit)
        observe_cache("l2", raw is not None)
        return raw, int(ttl or 0)

    async def _l2_set(
        self, key: str, payload: str, ttl_s: int, hash_fields: Mapping[str, Any] | None
    ) -> None:
        """Write payload to Redis for ttl_s seconds, as a hash with hash_fields when given."""
        permit = self._permit()
        if permit is None:
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
            self._l2_failed(e, permit)
            return
        except BaseException:
            self.breaker.release(permit)
            raise
        self._l2_ok(permit)

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
        permit = self._permit()
        if permit is None:
            return
        assert self.redis is not None
        try:
            await self.redis.delete(self._key(key))
        except (RedisError, OSError) as e:
            self._l2_failed(e, permit)
            return
        except BaseException:
            self.breaker.release(permit)
            raise
        self._l2_ok(permit)

    async def ping(self) -> bool | None:
        """Return True/False for Redis reachability, None when Redis is not configured."""
        if self.redis is None:
            return None
        permit = self.breaker.allow() or Permit(trial=False)  # health always asks
        try:
            await self.redis.ping()
        except (RedisError, OSError) as e:
            self._l2_failed(e, permit)
            return isinstance(e, MaxConnectionsError)  # busy, but up
        except BaseException:
            self.breaker.release(permit)
            raise
        self._l2_ok(permit)
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
        value = await self._from_l2(full)
        return (value, "l2") if value is not None else (None, None)

    def peek_any(self, key: str) -> M | None:
        """Return the L1 answer for key even if expired (while L1 keeps it); else None."""
        entry = self.cache.l1.peek(self.key(key))
        return entry.value if entry is not None and isinstance(entry.value, self.model) else None

    def peek_live(self, key: str, *, min_ttl_s: float = 0) -> M | None:
        """Return the L1 answer for key if it has more than min_ttl_s to live; else None."""
        entry = self.cache.l1.peek(self.key(key))
        if entry is None or not isinstance(entry.value, self.model):
            return None
        return entry.value if entry.expires - self.cache.clock() > min_ttl_s else None

    async def _from_l2(self, full: str, *, stale_s: float = 0, min_ttl_s: float = 0) -> M | None:
        """Return the L2 entry (copied into L1) if it has more than min_ttl_s left; else None."""
        raw, ttl = await self.cache._l2_get(full, as_hash=bool(self.hash_fields))
        if raw is None or ttl <= min_ttl_s:
            return None
        try:
            if len(raw) > _THREAD_BYTES:  # a long history: parse it off the event loop
                value = await asyncio.to_thread(self.model.model_validate_json, raw)
            else:
                value = self.model.model_validate_json(raw)
        except ValidationError:
            log.warning("dropping cache entry %s that does not fit %s", full, self.model.__name__)
            return None
        self.cache.l1.set(full, value, ttl, size=len(raw), stale_s=stale_s)
        return value

    async def set(self, key: str, value: M, ttl_s: int, *, stale_s: float = 0) -> None:
        """Store the answer in L1 and L2 for ttl_s seconds (L1 keeps it stale_s longer)."""
        if type(value) is not self.model:
            raise TypeError(f"expected {self.model.__name__}, got {type(value).__name__}")
        full = self.key(key)
        # Serialise off the event loop: a 20-year history is several megabytes of JSON.
        payload = await asyncio.to_thread(value.model_dump_json, by_alias=True)
        self.cache.l1.set(full, value, ttl_s, size=len(payload), stale_s=stale_s)
        fields = None
        if self.hash_fields:
            fields = value.model_dump(mode="json", include=set(self.hash_fields))
        await self.cache._l2_set(full, payload, ttl_s, fields)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[M]],
        ttl_s: int,
        *,
        stale_s: float = 0,
        early_s: float = 0,
        keep_s: float | None = None,
    ) -> tuple[M, CacheLevel | None]:
        """Return (answer, level): cached, or computed once for every concurrent caller.

        Level is ``l1``/``l2`` for a cached answer and None for one computed by this call (or
        by the call it waited for). An L1 entry expired less than ``stale_s`` ago is served
        at once while one background task refreshes it; so is a live one with less than
        ``early_s`` left (refresh ahead: the answer is never older than ttl_s). Otherwise
        one caller reads L2, then computes and stores; the others wait for that caller.
        A failed background refresh is logged and the stale entry served until it is gone.
        ``keep_s`` (default ``stale_s``) is how long L1 keeps an expired entry for
        :meth:`peek_any` (a later caller may allow more staleness than this one).
        """
        keep = stale_s if keep_s is None else max(keep_s, stale_s)
        full = self.key(key)
        entry = self.cache.l1.peek(full)
        if entry is not None and isinstance(entry.value, self.model):
            left = entry.expires - self.cache.clock()
            if left > early_s:
                observe_cache("l1", True)
                return entry.value, "l1"
            if left > -stale_s:  # refresh ahead, or stale within the allowance
                self._refresh(key, compute, ttl_s, keep, early_s)
                observe_cache("l1", True)
                return entry.value, "l1"
        observe_cache("l1", False)
        result: tuple[M, CacheLevel | None] = await self.cache.flights.run(
            full, lambda: self._fill(key, compute, ttl_s, keep, early_s)
        )
        return result

    async def _fill(
        self,
        key: str,
        compute: Callable[[], Awaitable[M]],
        ttl_s: int,
        stale_s: float,
        early_s: float,
    ) -> tuple[M, CacheLevel | None]:
        """Return the L2 entry if it is not due for refresh; else compute and store."""
        cached = await self._from_l2(self.key(key), stale_s=stale_s, min_ttl_s=early_s)
        if cached is not None:
            return cached, "l2"
        value = await compute()
        await self.set(key, value, ttl_s, stale_s=stale_s)
        return value, None

    def _refresh(
        self,
        key: str,
        compute: Callable[[], Awaitable[M]],
        ttl_s: int,
        stale_s: float,
        early_s: float,
    ) -> None:
        """Refresh key in the background unless a computation of it is already running, or
        one failed less than REFRESH_RETRY_S ago (the stale entry is served meanwhile)."""
        full = self.key(key)
        if self.cache.flights.running(full):
            return
        failed = self.cache.refresh_failures.get(full)
        if failed is not None and self.cache.clock() - failed[0] < self.cache.REFRESH_RETRY_S:
            return

        async def refresh() -> tuple[M, CacheLevel | None]:
            try:
                result = await self._fill(key, compute, ttl_s, stale_s, early_s)
            except Exception as e:
                streak = self.cache.refresh_failures.get(full, (0.0, 0))[1] + 1
                self.cache.refresh_failures[full] = (self.cache.clock(), streak)
                log.log(
                    logging.WARNING if streak == 1 else logging.DEBUG,
                    "background refresh of %s failed (%s: %s); serving the stale entry",
                    full,
                    type(e).__name__,
                    getattr(e, "log_detail", None) or e,
                )
                raise
            if self.cache.refresh_failures.pop(full, None) is not None:
                log.info("background refresh of %s works again", full)
            return result

        self.cache.flights.start(full, refresh)
