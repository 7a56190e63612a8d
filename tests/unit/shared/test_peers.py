"""The service kit's peer half: settings read under each service's names, problems translated."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.backtest.settings import BacktestSettings
from services.portfolio.settings import PortfolioSettings
from shared.errors import (
    AppError,
    NoDataError,
    Problem,
    ServiceUnavailableError,
    SymbolNotFoundError,
    UpstreamUnavailableError,
    ValidationProblemError,
)
from shared.http import UpstreamProblemError
from shared.peers import FieldMap, peer_bearer, translate


def _problem(status: int, code: str, field: str | None = None) -> UpstreamProblemError:
    problem = Problem(title="t", status=status, detail="what went wrong", code=code, field=field)
    return UpstreamProblemError("market", problem)


def test_peer_settings_read_the_service_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKET_URL", "http://market:8000")
    monkeypatch.setenv("BACKTEST_PREDICTOR_TIMEOUT_S", "7")
    monkeypatch.setenv("PORTFOLIO_PEER_TIMEOUT_S", "9")
    backtest, portfolio = BacktestSettings(), PortfolioSettings()
    assert backtest.market_url == portfolio.market_url == "http://market:8000"
    assert (backtest.predictor_timeout_s, backtest.market_timeout_s) == (7.0, 60.0)
    assert (portfolio.market_timeout_s, portfolio.backtest_timeout_s) == (9.0, 9.0)
    assert backtest.unknown_settings() == portfolio.unknown_settings() == []


def test_the_bearer_is_the_peers_own_else_the_service_token_else_the_api_token() -> None:
    settings = PortfolioSettings(api_token=SecretStr("api"))
    assert peer_bearer(settings, "market") == SecretStr("api")
    settings = PortfolioSettings(api_token=SecretStr("api"), service_token=SecretStr("svc"))
    assert peer_bearer(settings, "backtest") == SecretStr("svc")
    settings = PortfolioSettings(service_token=SecretStr("svc"), market_token=SecretStr("own"))
    assert peer_bearer(settings, "market") == SecretStr("own")


BACKTEST = FieldMap(default="symbols[1]", names={"symbol": "symbols[1]", "start": "start_date"})
PREDICTOR = FieldMap(default="symbol", names={"symbol": "symbol"}, others="as_of")
PORTFOLIO = FieldMap(default="strategy", names={"symbol": "symbols"}, unknown="symbols")


@pytest.mark.parametrize(
    ("error", "fields", "no_data", "kind", "field"),
    [
        (
            _problem(404, "no_data", "start"),
            BACKTEST,
            (NoDataError, "start_date"),
            NoDataError,
            "start_date",
        ),
        (
            _problem(404, "no_data", "start"),
            PREDICTOR,
            (SymbolNotFoundError, "symbol"),
            SymbolNotFoundError,
            "symbol",
        ),
        (
            _problem(404, "symbol_not_found", "symbol"),
            BACKTEST,
            None,
            SymbolNotFoundError,
            "symbols[1]",
        ),
        (_problem(404, "not_found"), PORTFOLIO, None, SymbolNotFoundError, "symbols"),
        (
            _problem(422, "validation_error", "start"),
            BACKTEST,
            None,
            ValidationProblemError,
            "start_date",
        ),
        (
            _problem(422, "validation_error", "end"),
            PREDICTOR,
            None,
            ValidationProblemError,
            "as_of",
        ),
        (_problem(422, "validation_error"), PORTFOLIO, None, ValidationProblemError, "strategy"),
        (_problem(504, "service_timeout"), PORTFOLIO, None, ServiceUnavailableError, None),
        (_problem(500, "internal_error"), BACKTEST, None, UpstreamUnavailableError, None),
    ],
)
def test_a_peer_problem_becomes_this_services_naming_its_field(
    error: UpstreamProblemError,
    fields: FieldMap,
    no_data: tuple[type[AppError], str] | None,
    kind: type[AppError],
    field: str | None,
) -> None:
    translated = translate(error, "AAPL", fields, no_data=no_data)
    assert type(translated) is kind
    assert translated.field == field
    assert "AAPL" in translated.detail and "what went wrong" in translated.detail
