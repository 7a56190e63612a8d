"""HTTP route of the model features: `GET /features/{symbol}` (operation `get_features`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.market.features import FEATURES_DOC, FeatureSeries, FeatureService
from shared.api import ProblemDocs

router = APIRouter()

errors = ProblemDocs(
    {
        404: "The symbol does not exist.",
        502: "The market-data vendor could not be reached or answered nonsense.",
    }
)


def feature_service(request: Request) -> FeatureService:
    """Return the app's FeatureService (made on first use over the app's MarketService)."""
    state = request.app.state
    service = getattr(state, "features", None)
    if not isinstance(service, FeatureService) or service.market is not state.market:
        service = FeatureService(state.market)
        state.features = service
    return service


@router.get(
    "/features/{symbol}",
    operation_id="get_features",
    response_model=FeatureSeries,
    responses=errors(401, 404, 422, 502, 503),
    summary="Model features per bar (50, past data only)",
    description=FEATURES_DOC,
)
async def get_features(
    request: Request,
    symbol: Annotated[
        str,
        Path(
            description="Ticker, case-insensitive: e.g. `AAPL`, `BRK-B`, `^GSPC`, `BTC-USD`.",
            max_length=40,
        ),
    ],
    start: Annotated[
        date | None,
        Query(description="First date, YYYY-MM-DD, inclusive. Default: one year before `end`."),
    ] = None,
    end: Annotated[
        date | None,
        Query(description="Last date, YYYY-MM-DD, inclusive. Default: the latest available bar."),
    ] = None,
) -> FeatureSeries:
    """Return the model features of every bar between `start` and `end`, columnar."""
    return await feature_service(request).get_features(symbol, start=start, end=end)
