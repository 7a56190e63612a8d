"""HTTP routes of the strategy registry: list, show, save, retire, validate, the language.

Route docstrings become the MCP tool descriptions.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.backtest.catalog import check_program, language, language_guide
from services.backtest.routes import Service, errors
from services.backtest.schemas import StrategyInfo, StrategyList
from services.backtest.strategy_schemas import (
    LanguageInfo,
    RetiredStrategy,
    SaveStrategyRequest,
    StrategyCheck,
    ValidateStrategyRequest,
)
from shared.rules import CrossFieldRule, documents_rules, rules_extension

router = APIRouter()
# Not MCP tools (the gateway excludes `internal`): the default tool set must fit 32 kB, and
# a model writing strategies needs `validate_strategy`, `save_strategy` (whose description
# carries the compact grammar, the functions and two examples) and `list_strategies`. Over
# HTTP every route is there.
HTTP_ONLY: list[str | Enum] = ["internal"]
# The gateway shows a model this instead of the docstring's first paragraph.
SAVE_GUIDE = {
    "x-mcp-description": language_guide(
        "Save rules in the strategy language under `name` (again: its next version); run it "
        'as `strategy: {"name": ..., "params": {...}}`.'
    )
}
LANGUAGE_RULES = (
    CrossFieldRule(
        ("rules", "params"),
        "the rules compile in the strategy language (`GET /strategies/language`): at least "
        "one entry rule, every `$param` used declared in `params` and every declared one "
        "used, windows and lags whole numbers of bars",
    ),
)

StrategyName = Annotated[
    str, Path(max_length=63, description="A built-in or saved strategy's name.")
]


@router.get(
    "/strategies",
    operation_id="list_strategies",
    response_model=StrategyList,
    responses=errors(401, 503),
    summary="Strategies and their parameters",
)
async def list_strategies(service: Service) -> StrategyList:
    """List every strategy a request's `strategy.name` accepts: the built-ins and the saved
    strategies (latest version, with their normal `rules`), each with the JSON schema of
    its `strategy.params` (bounds, defaults), and the numeric parameters a `param_grid`
    can search. `ml_ensemble` (the predictor's calls) is available where a predictor
    service is configured or co-hosted."""
    return await service.catalog.list()


@router.get(
    "/strategies/language",
    operation_id="get_strategy_language",
    tags=HTTP_ONLY,
    response_model=LanguageInfo,
    responses=errors(401),
    summary="The strategy language",
)
async def get_strategy_language() -> LanguageInfo:
    """Return the strategy language: grammar, series, functions, rules, semantics, examples."""
    return language()


@router.post(
    "/strategies/validate",
    operation_id="validate_strategy",
    response_model=StrategyCheck,
    responses=errors(401, 422),
    summary="Check strategy rules without saving",
    openapi_extra=rules_extension(*LANGUAGE_RULES),
)
@documents_rules(*LANGUAGE_RULES)
async def validate_strategy(body: ValidateStrategyRequest) -> StrategyCheck:
    """Check strategy rules without saving: normal text, `$params`, warm-up bars. A bad
    rule is a 422 naming the rule, line:column and the closest valid name.

    E.g. "entry_long 1:1: unknown function `rsl`; did you mean `rsi`?". The language:
    `save_strategy`'s description, or `GET /strategies/language`."""
    return check_program(body.rules, body.params)


@router.post(
    "/strategies",
    operation_id="save_strategy",
    response_model=StrategyInfo,
    status_code=201,
    responses=errors(401, 409, 422, 503),
    summary="Save a strategy (a new immutable version)",
    openapi_extra={**rules_extension(*LANGUAGE_RULES), **SAVE_GUIDE},
)
@documents_rules(*LANGUAGE_RULES)
async def save_strategy(body: SaveStrategyRequest, service: Service) -> StrategyInfo:
    """Save rules in the strategy language under `name`; saving a name again makes its
    next version (versions never change). Use it anywhere a strategy is accepted as
    `{"name": ..., "params": {...}}` (`version` optional: default the latest). 422 when a
    rule does not compile (as `validate_strategy`), 409 for a built-in's name."""
    return await service.catalog.save(body)


@router.get(
    "/strategies/{name}",
    operation_id="get_strategy",
    tags=HTTP_ONLY,
    response_model=StrategyInfo,
    responses=errors(401, 404, 422, 503),
    summary="One strategy",
)
async def get_strategy(
    name: StrategyName,
    service: Service,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="A saved version (default: the latest).")
    ] = None,
) -> StrategyInfo:
    """Return one built-in or saved strategy with its parameters (a saved one's rules and
    version)."""
    return await service.catalog.get(name, version)


@router.delete(
    "/strategies/{name}",
    operation_id="retire_strategy",
    tags=HTTP_ONLY,
    response_model=RetiredStrategy,
    responses=errors(401, 404, 409, 422, 503),
    summary="Retire a saved strategy",
)
async def retire_strategy(name: StrategyName, service: Service) -> RetiredStrategy:
    """Retire every version of a saved strategy: it is no longer listed nor accepted by
    name. Stored runs keep the rules they traded."""
    return await service.catalog.retire(name)
