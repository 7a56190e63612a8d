"""ModelCache.get_or_compute: one computation per key, stale-while-revalidate, refresh ahead.

Time is a settable clock handed to the cache; computations are gated by events, so every
assertion is about what happened, never about how long it took.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import BaseModel, ConfigDict

from shared.cache import Cache, LRUCache, ModelCache
from shared.singleflight import SingleFlight


class Quote(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: float


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Counts computations; each waits for `gate` when it is set up to block."""

    def __init__(self) -> None:
        self.calls = 0
        self.price = 100.0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def compute(self) -> Quote:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return Quote(symbol="AAPL", price=self.price)


def cache(clock: Clock) -> ModelCache[Quote]:
    return ModelCache(Cache(clock=clock), Quote)


def test_concurrent_misses_compute_once_and_all_get_the_answer() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> list[tuple[Quote, str | None]]:
        source.gate = asyncio.Event()
        calls = [
            asyncio.create_task(quotes.get_or_compute("k", source.compute, 10)) for _ in range(200)
        ]
        await asyncio.sleep(0)
        assert quotes.cache.flights.running("k:v" + quotes.version)
        source.gate.set()
        return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert source.calls == 1
    assert {q.price for q, _ in results} == {100.0}
    assert all(level is None for _, level in results)  # computed (or waited for), not cached
    assert quotes.cache.flights.joined == 199


def test_a_live_entry_is_served_from_l1_without_computing() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> tuple[Quote, str | None]:
        await quotes.get_or_compute("k", source.compute, 10)
        clock.now += 9.9
        return await quotes.get_or_compute("k", source.compute, 10)

    quote, level = asyncio.run(run())
    assert (quote.price, level, source.calls) == (100.0, "l1", 1)


def test_an_expired_entry_is_served_stale_while_one_refresh_runs() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> None:
        await quotes.get_or_compute("k", source.compute, 10, stale_s=30)
        clock.now += 15  # expired 5 s ago, within the 30 s allowance
        source.price, source.gate = 110.0, asyncio.Event()
        answers = []
        for _ in range(50):
            answers.append(await quotes.get_or_compute("k", source.compute, 10, stale_s=30))
            await asyncio.sleep(0)  # the background refresh starts, and waits for the gate
        assert {(q.price, level) for q, level in answers} == {(100.0, "l1")}
        assert source.calls == 2  # one refresh for fifty stale reads
        source.gate.set()
        await quotes.cache.flights.drain()  # let the background refresh finish
        quote, level = await quotes.get_or_compute("k", source.compute, 10, stale_s=30)
        assert (quote.price, level, source.calls) == (110.0, "l1", 2)

    asyncio.run(run())


def test_past_the_stale_allowance_callers_wait_for_one_computation() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> None:
        await quotes.get_or_compute("k", source.compute, 10, stale_s=5)
        clock.now += 16  # expired 6 s ago: beyond the 5 s allowance
        source.price = 120.0
        answers = await asyncio.gather(
            *(quotes.get_or_compute("k", source.compute, 10, stale_s=5) for _ in range(20))
        )
        assert {q.price for q, _ in answers} == {120.0}
        assert source.calls == 2

    asyncio.run(run())


def test_without_stale_allowance_an_expired_entry_is_never_served() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> tuple[Quote, str | None]:
        await quotes.get_or_compute("k", source.compute, 10)
        clock.now += 10.01
        source.price = 130.0
        return await quotes.get_or_compute("k", source.compute, 10)

    quote, level = asyncio.run(run())
    assert (quote.price, level, source.calls) == (130.0, None, 2)


def test_refresh_ahead_keeps_answers_younger_than_the_ttl() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> None:
        await quotes.get_or_compute("k", source.compute, 10, early_s=2)
        clock.now += 7.5  # 2.5 s left: live, no refresh yet
        await quotes.get_or_compute("k", source.compute, 10, early_s=2)
        assert source.calls == 1
        clock.now += 1  # 1.5 s left: served, and refreshed in the background
        source.price, source.gate = 140.0, asyncio.Event()
        quote, level = await quotes.get_or_compute("k", source.compute, 10, early_s=2)
        await asyncio.sleep(0)
        assert (quote.price, level, source.calls) == (100.0, "l1", 2)
        source.gate.set()
        await quotes.cache.flights.drain()
        clock.now += 9  # 18.5 s after the first answer: the refreshed one, 9 s old
        quote, level = await quotes.get_or_compute("k", source.compute, 10, early_s=2)
        assert (quote.price, level, source.calls) == (140.0, "l1", 2)

    asyncio.run(run())


def test_a_failed_refresh_keeps_the_stale_entry_is_logged_once_and_retried_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)
    caplog.set_level(logging.WARNING, logger="shared.cache")

    async def run() -> None:
        await quotes.get_or_compute("k", source.compute, 10, stale_s=60)
        clock.now += 12
        source.fail = RuntimeError("provider down")
        for _ in range(20):  # one refresh fails; the next reads do not hammer the source
            quote, level = await quotes.get_or_compute("k", source.compute, 10, stale_s=60)
            await quotes.cache.flights.drain()
            assert (quote.price, level) == (100.0, "l1")
        assert source.calls == 2
        clock.now += Cache.REFRESH_RETRY_S  # then it is tried again (and fails again)
        await quotes.get_or_compute("k", source.compute, 10, stale_s=60)
        await quotes.cache.flights.drain()
        assert source.calls == 3
        clock.now += 60  # the stale allowance is gone: the caller gets the failure
        with pytest.raises(RuntimeError, match="provider down"):
            await quotes.get_or_compute("k", source.compute, 10, stale_s=60)

    asyncio.run(run())
    logged = [r for r in caplog.records if "background refresh" in r.getMessage()]
    assert len(logged) == 1  # the first failure of a streak, not every one


def test_a_cancelled_caller_does_not_cancel_the_computation_for_the_others() -> None:
    clock, source = Clock(), Source()
    quotes = cache(clock)

    async def run() -> Quote:
        source.gate = asyncio.Event()
        first = asyncio.create_task(quotes.get_or_compute("k", source.compute, 10))
        await asyncio.sleep(0)
        second = asyncio.create_task(quotes.get_or_compute("k", source.compute, 10))
        await asyncio.sleep(0)
        first.cancel()
        source.gate.set()
        quote, _ = await second
        assert first.cancelled()
        return quote

    assert asyncio.run(run()).price == 100.0
    assert source.calls == 1


def test_single_flight_forgets_a_key_once_done_and_a_failure_reaches_every_waiter() -> None:
    flights: SingleFlight[int] = SingleFlight()
    gate_calls = 0

    async def boom() -> int:
        nonlocal gate_calls
        gate_calls += 1
        await asyncio.sleep(0)
        raise ValueError("nope")

    async def run() -> list[BaseException | int]:
        results = await asyncio.gather(
            *(flights.run("x", boom) for _ in range(5)), return_exceptions=True
        )
        assert not flights.running("x") and len(flights) == 0
        return list(results)

    results = asyncio.run(run())
    assert gate_calls == 1
    assert all(isinstance(r, ValueError) for r in results)


def test_lru_keeps_an_expired_entry_only_for_its_stale_window() -> None:
    clock = Clock()
    lru = LRUCache(10, clock=clock)
    lru.set("a", 1, ttl_s=5, stale_s=10)
    lru.set("b", 2, ttl_s=5)
    clock.now += 6
    assert lru.get("a") is None and lru.get("b") is None  # get: live entries only
    entry = lru.peek("a")
    assert entry is not None and entry.value == 1 and entry.expires == 1005.0
    assert lru.peek("b") is None and len(lru) == 1
    clock.now += 10
    assert lru.peek("a") is None and len(lru) == 0
