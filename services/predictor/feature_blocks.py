"""Feature windows of single predictions, sliced from calendar-year blocks fetched once.

`/predict` reads the feature rows of the bars up to `as_of`: those of the last
`lead_days` calendar days (the model's context and a margin). Asking the market for that
window anew for every `as_of` (features over ~700 bars with their warm-up, then JSON) cost
more than the inference. Instead :class:`FeatureBlocks` asks once for the block that holds
`as_of` (its calendar year, from `lead_days` before 1 January, so that early January has
its window too) and slices it:

- the rows answered are exactly the window's: bars from `as_of - lead_days` to `as_of`;
- no look-ahead: the market computes a bar's features from bars up to and including it, so
  rows up to `as_of` do not depend on the block reaching past it;
- deterministic: the market's warm-up starts before the block's fixed start, so a bar's
  features are the same whichever `as_of` asked for them, in every process (a window that
  started at `as_of - lead_days` gave values that moved in their last bits with `as_of`).

A block is asked up to the end of its year, or up to the requested date when that is one of
the market's last few days (`RECENT_DAYS`, which late prints may still change): such a
recent block is kept `RECENT_TTL_S` (the market caches such windows as long), a settled one
`SETTLED_TTL_S`; a request past a block's end fetches it again. At most `MAX_BLOCKS` are
kept (least recently used first out); concurrent requests for one block share one fetch.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from services.predictor.market import FeatureFrame, MarketFeatures
from shared.singleflight import SingleFlight

RECENT_DAYS = 4  # the market's: bars of the last days may still change
RECENT_TTL_S = 60.0  # the market's default indicator TTL: its own cache of such a window
SETTLED_TTL_S = 86_400.0  # the market's default historical TTL
MAX_BLOCKS = 64  # ~330 rows x 50 features each: about 9 MB in all
DAY_NS = 86_400 * 10**9


def day_ns(day: date) -> int:
    """Return UTC midnight of a date as int64 nanoseconds since the epoch."""
    return (day - date(1970, 1, 1)).days * DAY_NS


def today_utc() -> date:
    """Return today's date in UTC."""
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Block:
    """One fetched block: its features, the last date it was asked up to, when it expires."""

    frame: FeatureFrame
    end: date
    expires: float


class FeatureBlocks:
    """Feature windows of one symbol up to a date, from cached calendar-year blocks."""

    def __init__(
        self,
        market: MarketFeatures,
        *,
        max_blocks: int = MAX_BLOCKS,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = today_utc,
    ) -> None:
        self.market = market
        self.max_blocks = max_blocks
        self.clock = clock
        self.today = today
        self._blocks: OrderedDict[tuple[str, date], Block] = OrderedDict()
        self._flights: SingleFlight[Block] = SingleFlight()

    def clear(self) -> None:
        """Forget every block (the next requests fetch anew)."""
        self._blocks.clear()

    async def window(self, symbol: str, end: date, lead_days: int) -> FeatureFrame:
        """Return the features and closes of the symbol's bars from end - lead_days to end."""
        start = date(end.year, 1, 1) - timedelta(days=lead_days)
        key = (symbol, start)
        block = self._blocks.get(key)
        if block is None or block.end < end or block.expires <= self.clock():
            block = await self._fetch(key, end)
        else:
            self._blocks.move_to_end(key)
        frame = block.frame
        lo, hi = np.searchsorted(
            frame.times, [day_ns(end - timedelta(days=lead_days)), day_ns(end) + DAY_NS]
        )
        return FeatureFrame(
            frame.symbol, frame.names, frame.times[lo:hi], frame.matrix[lo:hi], frame.close[lo:hi]
        )

    async def _fetch(self, key: tuple[str, date], end: date) -> Block:
        """Fetch the block of key reaching at least to end; one fetch for concurrent callers."""
        while True:
            block = await self._flights.run(f"{key[0]}:{key[1]}", lambda: self._load(key, end))
            if block.end >= end:  # else it joined a fetch that stops short of end
                return block

    async def _load(self, key: tuple[str, date], end: date) -> Block:
        """Ask the market for the block: to its year's end if settled, else to end."""
        symbol, start = key
        settled = self.today() - timedelta(days=RECENT_DAYS + 1)
        year_end = date(end.year, 12, 31)
        if end <= settled:
            until, ttl = min(year_end, settled), SETTLED_TTL_S
        else:
            until, ttl = end, RECENT_TTL_S
        frame = await self.market.features(symbol, start, until, date_field="as_of")
        block = Block(frame, until, self.clock() + ttl)
        self._blocks[key] = block
        self._blocks.move_to_end(key)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return block
