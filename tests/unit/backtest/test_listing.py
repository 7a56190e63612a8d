"""The run listing's statement is built once per shape of filters, values bound per call."""

from __future__ import annotations

import sqlalchemy as sa

from services.backtest import repository as repo


def test_a_symbol_pattern_escapes_like_wildcards() -> None:
    assert repo._like_symbol("AAPL") == "%,AAPL,%"
    pattern = repo._like_symbol("A_B%/C")
    assert pattern == "%,A/_B/%//C,%"
    engine = sa.create_engine("sqlite://")
    with engine.connect() as c:
        like = sa.literal(",AXB%/C,").like(sa.literal(pattern), escape="/")
        assert c.execute(sa.select(like)).scalar() == 0  # `_` is a character, not any one
        exact = sa.literal(",A_B%/C,").like(sa.literal(pattern), escape="/")
        assert c.execute(sa.select(exact)).scalar() == 1


def test_each_shape_of_filters_is_built_once() -> None:
    repo._listing.cache_clear()
    first = repo._listing(None, True, False)
    assert repo._listing(None, True, False) is first
    assert repo._listing("optimization", True, False) is not first
    assert repo._listing.cache_info().misses == 2
