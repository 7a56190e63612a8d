"""The scheduler runs every active deployment up to the latest session the calendar closed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi.testclient import TestClient

from services.portfolio.scheduler import last_closed_session, tick
from services.portfolio.service import PortfolioService
from tests.unit.portfolio.test_replay import deploy

SMA = {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}}


def service_of(platform: TestClient) -> PortfolioService:
    app: Any = next(r.app for r in platform.app.routes if getattr(r, "path", "") == "/portfolio")  # type: ignore[attr-defined]
    return app.state.portfolio  # type: ignore[no-any-return]


def test_the_calendar_decides_which_session_has_closed(platform: TestClient) -> None:
    service = service_of(platform)

    async def go() -> tuple[date, date, date]:
        # Friday 2023-10-27: open at 15:00 UTC, closed at 21:00 UTC; Saturday is no session
        during = await last_closed_session(service, datetime(2023, 10, 27, 15, tzinfo=UTC))
        after = await last_closed_session(service, datetime(2023, 10, 27, 21, tzinfo=UTC))
        weekend = await last_closed_session(service, datetime(2023, 10, 28, 12, tzinfo=UTC))
        return during, after, weekend

    during, after, weekend = platform.portal.call(go)  # type: ignore[union-attr]
    assert during == date(2023, 10, 26) and after == date(2023, 10, 27)
    assert weekend == date(2023, 10, 27)


def test_a_tick_runs_active_deployments_and_skips_stopped_ones(platform: TestClient) -> None:
    service = service_of(platform)
    live = deploy(platform, {"strategy": SMA, "symbols": ["PG"], "start_date": "2023-01-03"})
    stopped = deploy(platform, {"strategy": SMA, "symbols": ["PG"], "start_date": "2023-01-03"})
    platform.delete(f"/portfolio/deployments/{stopped['id']}")
    now = datetime(2023, 10, 27, 21, tzinfo=UTC)
    done = platform.portal.call(tick, service, now)  # type: ignore[union-attr]
    assert done[live["id"]] > 150 and stopped["id"] not in done
    again = platform.portal.call(tick, service, now)  # type: ignore[union-attr]
    assert again[live["id"]] == 0  # nothing new to process
    got = platform.get(f"/portfolio/deployments/{live['id']}").json()
    assert got["last_session"] == "2023-10-27"
