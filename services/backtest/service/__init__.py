"""The backtest service's domain logic, one part per job: `runs` (simulate and store one
backtest), `analyses` (searches, walk-forwards and Monte Carlo: prepared, then run inline or
as a job) and `reads` (stored results, lists, fills, charts, deletion).

Never imports FastAPI: routes call the parts' methods, jobs run them, tests call them
directly. What the parts share (errors, `Prepared`, the `ml_ensemble` helpers, a stored
run's answer) is in `common`.
"""

from __future__ import annotations

from services.backtest.analyses import Analyses
from services.backtest.market import MarketBars
from services.backtest.service.analyses import BacktestAnalyses
from services.backtest.service.reads import BacktestReads
from services.backtest.service.runs import BacktestRuns
from services.backtest.settings import BacktestSettings
from services.backtest.signals import Predictor
from shared.cache import Cache
from shared.db import Database


class BacktestService:
    """Backtests on the market service's bars, stored so they survive a restart: the runs,
    analyses and reads of one database, cache and market client."""

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        market: MarketBars,
        settings: BacktestSettings,
        predictor: Predictor | None = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.settings = settings
        stored = Analyses(db)
        self.runs = BacktestRuns(db=db, market=market, settings=settings, predictor=predictor)
        self.catalog = self.runs.catalog
        self.analyses = BacktestAnalyses(runs=self.runs, stored=stored)
        self.reads = BacktestReads(db=db, cache=cache, settings=settings, stored=stored)

    async def aclose(self) -> None:
        """Close the clients this service opened and stop the chart worker."""
        await self.runs.aclose()
        self.reads.close()
