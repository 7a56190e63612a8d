"""HTTP route of the model features: `GET /features/{symbol}` (operation `get_features`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.market.features import FEATURES_DOC, FeatureSeries, FeatureService
from services.market.routes import DATE_ORDER, MARKET, End, Start, Symbol
from shared.api import ProblemDocs
from shared.rules import cross_field_rules
from shared.state import Slot

router = APIRouter()

errors = ProblemDocs(
    {
        404: "The symbol does not exist.",
        502: "The market-data vendor could not be reached or answered nonsense.",
    }
)


FEATURES = Slot("features", FeatureService)


def feature_service(request: Request) -> FeatureService:
    """Return the app's FeatureService (made on first use over the app's MarketService)."""
    market = MARKET.of(request)
    service = FEATURES.find(request.app)
    if service is None or service.market is not market:
        service = FEATURES.put(request.app, FeatureService(market))
    return service


@router.get(
    "/features/{symbol}",
    operation_id="get_features",
    response_model=FeatureSeries,
    responses=errors(401, 404, 422, 502, 503),
    summary="Model features per bar (50, past data only)",
    **cross_field_rules(FEATURES_DOC, DATE_ORDER),
)
async def get_features(
    request: Request,
    symbol: Symbol,
    start: Start = None,
    end: End = None,
) -> FeatureSeries:
    """Return the model features of every bar between `start` and `end`, columnar."""
    return await feature_service(request).get_features(symbol, start=start, end=end)
