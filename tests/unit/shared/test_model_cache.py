"""shared.cache.ModelCache: typed answers under schema-versioned keys, never mutated in place."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.cache import Cache, ModelCache, schema_version


class Inner(BaseModel):
    model_config = ConfigDict(frozen=True)

    cached: bool
    rows: list[float]


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: float
    inner: Inner


class AnswerV2(BaseModel):  # the same answer, one field added
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: float
    inner: Inner
    currency: str = "USD"


class AnswerReworded(BaseModel):  # the same fields, one description changed
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: float = Field(description="Last close.")
    inner: Inner


class Mutable(BaseModel):
    symbol: str


class FrozenOutside(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[Mutable | None]


def test_schema_version_follows_the_shape() -> None:
    assert schema_version(Answer) == schema_version(Answer)
    assert len(schema_version(Answer)) == 12
    versions = {schema_version(m) for m in (Answer, AnswerV2, AnswerReworded)}
    assert len(versions) == 3


def test_only_frozen_models_all_the_way_down_are_cached() -> None:
    cache = Cache()
    with pytest.raises(TypeError, match="Mutable"):
        ModelCache(cache, Mutable)
    with pytest.raises(TypeError, match="Mutable"):
        ModelCache(cache, FrozenOutside)  # a mutable model nested in a list of a union
    with pytest.raises(ValueError, match="volume"):
        ModelCache(cache, Answer, hash_fields=("price", "volume"))


def test_l1_entries_are_shared_frozen_and_copied_on_change() -> None:
    async def go() -> None:
        cache = Cache(l1_size=10)
        answers = ModelCache(cache, Answer)
        assert answers.key("market:price:X") == f"market:price:X:v{schema_version(Answer)}"
        assert await answers.get("market:price:X") == (None, None)
        entry = Answer(symbol="X", price=1.5, inner=Inner(cached=False, rows=[1.0]))
        await answers.set("market:price:X", entry, 60)
        hit, level = await answers.get("market:price:X")
        assert hit is entry and level == "l1"
        with pytest.raises(ValidationError):
            hit.inner.cached = True  # type: ignore[misc]
        served = hit.model_copy(update={"inner": hit.inner.model_copy(update={"cached": True})})
        assert served.inner.cached is True
        again, _ = await answers.get("market:price:X")
        assert again is not None and again.inner.cached is False
        # Another answer shape under the same name is another entry.
        assert await ModelCache(cache, AnswerV2).get("market:price:X") == (None, None)
        with pytest.raises(TypeError, match="AnswerV2"):
            await answers.set("k", AnswerV2(symbol="X", price=1.0, inner=entry.inner), 60)
        await cache.aclose()

    asyncio.run(go())
