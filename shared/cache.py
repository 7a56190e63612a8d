"""Two-level cache: L1 in-process LRU in front of L2 Redis (the database is L3).

Values are JSON-serialisable. If Redis is configured but down, every call still answers
from L1 (and the caller falls through to the database); the outage is logged once, then
once more when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.logging import mask_secrets

log = logging.getLogger(__name__)

CacheLevel = Literal["l1", "l2"]


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

    async def get(self, key: str, *, as_hash: bool = False) -> tuple[Any | None, CacheLevel | None]:
        """Return (value, level) from L1 then L2, or (None, None)."""
        value = self.l1.get(key)
        if value is not None:
            return value, "l1"
        if self._skip_l2():
            return None, None
        assert self.redis is not None
        try:
            pipe = self.redis.pipeline(transaction=False)
            if as_hash:
                pipe.hget(self._key(key), "__json__")
            else:
                pipe.get(self._key(key))
            pipe.ttl(self._key(key))
            raw, ttl = await pipe.execute()
        except (RedisError, OSError) as e:
            self._l2_failed(e)
            return None, None
        self._l2_ok()
        try:
            value = json.loads(raw) if raw is not None else None
        except ValueError:
            log.warning("dropping undecodable cache entry %s", key)
            value = None
        if value is None:
            return None, None
        if ttl and ttl > 0:
            self.l1.set(key, value, ttl, size=len(raw))
        return value, "l2"

    async def set(
        self, key: str, value: Any, ttl_s: int, *, hash_fields: dict[str, Any] | None = None
    ) -> None:
        """Store value in L1 and L2 for ttl_s seconds (as a Redis hash when fields are given)."""
        # Serialise off the event loop: a 20-year history is several megabytes of JSON.
        payload = await asyncio.to_thread(json.dumps, value, separators=(",", ":"), default=str)
        self.l1.set(key, value, ttl_s, size=len(payload))
        if self._skip_l2():
            return
        assert self.redis is not None
        try:
            if hash_fields is not None:
                mapping: dict[str | bytes, str] = {
                    k: "" if v is None else str(v) for k, v in hash_fields.items()
                }
                mapping["__json__"] = payload
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
