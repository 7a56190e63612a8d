"""Public contract of the strategy routes: save, validate, describe the language."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.backtest.expressions import (
    MAX_PARAMS,
    NAME_PATTERN,
    ONLY_PATTERN,
    ParamName,
    ParamSpec,
    Rules,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateStrategyRequest(_Request):
    """Rules to check without saving."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rules": {
                        "entry_long": "rsi(close, $n) < 30 and close > sma(close, 200)",
                        "exit_long": "rsi(close, $n) > 70",
                    },
                    "params": {"n": {"default": 14, "min": 2, "max": 50}},
                }
            ]
        },
    )

    rules: Rules
    params: dict[ParamName, ParamSpec] = Field(
        default_factory=dict, max_length=MAX_PARAMS, json_schema_extra=ONLY_PATTERN
    )


class SaveStrategyRequest(ValidateStrategyRequest):
    """A strategy to save under `name` (saving a name again makes its next version)."""

    name: str = Field(pattern=NAME_PATTERN, description="lower_snake_case, not a built-in.")
    description: str = Field(default="", max_length=1000)


class ParamFound(BaseModel):
    """A parameter the rules use."""

    name: str
    default: float
    min: float | None
    max: float | None
    integer: bool = Field(description="A number of bars (a window or a lag): whole values.")


class StrategyCheck(BaseModel):
    """Rules that compile: their normal text, parameters and warm-up."""

    rules: dict[str, str] = Field(description="Each rule's normal text (the compile key).")
    params: list[ParamFound] = Field(max_length=MAX_PARAMS)
    warmup_bars: int = Field(
        description="Bars before every indicator has a value at the defaults: no rule is "
        "true before then."
    )
    short: bool = Field(description="Whether it can go short (it has entry_short).")


class RetiredStrategy(BaseModel):
    """A retired saved strategy: no longer listed or accepted by name."""

    name: str
    retired_versions: int


class LanguageFunction(BaseModel):
    """One function of the language."""

    name: str
    signature: str
    description: str
    returns: str = Field(description="`series` or `bool`.")


class LanguageInfo(BaseModel):
    """The strategy language: grammar, series, functions, rules, semantics, examples."""

    grammar: str
    series: list[str]
    functions: list[LanguageFunction]
    rules: dict[str, str]
    semantics: list[str]
    examples: list[dict[str, object]]
