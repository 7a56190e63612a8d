"""Strategies written in the language, as a request carries them and as the engine runs them.

A request's `strategy` is a built-in (`{"name": "sma_crossover", "params": {...}}`), a saved
strategy (`{"name": "rsi_trend", "params": {"n": 10}}`, resolved by the service to the rules
of its latest or given version) or an inline one (`{"rules": {...}, "params": {...}}`).
``definition`` compiles an inline strategy into a ``StrategyDef`` like the built-ins': a
pydantic parameter model made from the declared bounds (so the grid checks of `/optimize`
apply unchanged), a target builder over ``language.program``, and a sweep of many
combinations in one parallel pass (``language.batch``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    StringConstraints,
    create_model,
)

from services.backtest.engine.runner import Bars
from services.backtest.engine.signals import rules_targets_nb
from services.backtest.language.batch import ProgramSweep
from services.backtest.language.program import (
    Evaluation,
    ParamDecl,
    Program,
    compile_program,
    symbol_series,
)
from services.backtest.strategies import STRATEGIES, StrategyDef

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
BUILTIN_NAMES = frozenset(STRATEGIES)  # a name among them is the built-in, never a saved one
RULE_DOC = "A condition in the strategy language, decided at each bar's close."
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,40}$"
ParamName = Annotated[str, StringConstraints(pattern=PARAM_NAME)]  # `$name` without the $
MAX_PARAMS = 16  # `$params` a strategy may declare
ONLY_PATTERN: dict[str, JsonValue] = {"additionalProperties": False}  # keys: ParamName only


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rules(_Model):
    """Up to four conditions (`GET /strategies/language`); at least one entry."""

    entry_long: str | None = Field(default=None, max_length=2000)
    exit_long: str | None = Field(default=None, max_length=2000)
    entry_short: str | None = Field(default=None, max_length=2000)
    exit_short: str | None = Field(default=None, max_length=2000)

    def given(self) -> list[tuple[str, str]]:
        """Return the (rule, text) pairs given."""
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class ParamSpec(_Model):
    """A `$param`'s default and bounds."""

    default: float
    min: float | None = None
    max: float | None = None


class InlineStrategy(_Model):
    """A strategy written in the language: rules over `$params` declared here."""

    rules: Rules
    params: dict[ParamName, ParamSpec] = Field(
        default_factory=dict, max_length=MAX_PARAMS, json_schema_extra=ONLY_PATTERN
    )
    name: str | None = Field(
        default=None, description="Set by the service: the saved strategy this came from."
    )
    version: int | None = Field(default=None, description="Set by the service: its version.")
    _compiled: tuple[StrategyDef, BaseModel] | None = PrivateAttr(default=None)

    @property
    def label(self) -> str:
        """Return the name runs are stored and listed under."""
        return self.name or "expression"

    def compiled(self) -> tuple[StrategyDef, BaseModel]:
        """Return the engine's definition and the parameter values (kept on this object)."""
        if self._compiled is None:
            d = definition(self)
            self._compiled = (d, d.parse({k: v.default for k, v in self.params.items()}))
        return self._compiled


class SavedStrategy(_Model):
    """A saved strategy by name (`GET /strategies`), with parameter values to use."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="A saved strategy's name.",
        json_schema_extra={"not": {"enum": list[JsonValue](sorted(BUILTIN_NAMES))}},
    )
    version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Default: the latest."
    )
    params: dict[ParamName, float] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description="`$param` values (default: saved).",
        json_schema_extra=ONLY_PATTERN,
    )

    @property
    def label(self) -> str:
        """Return the name runs are stored and listed under."""
        return self.name


def decls(params: Mapping[str, ParamSpec]) -> tuple[ParamDecl, ...]:
    """Return the language's declarations of ``params``."""
    return tuple(ParamDecl(k, v.default, v.min, v.max) for k, v in sorted(params.items()))


def compile_inline(strategy: InlineStrategy) -> Program:
    """Return the checked program of an inline strategy (LanguageError otherwise)."""
    return compile_program(strategy.rules.given(), decls(strategy.params))


def _params_model(program: Program) -> type[BaseModel]:
    """Return a pydantic model of the program's parameters: bounds as constraints."""
    uses = dict(program.uses)
    fields: dict[str, Any] = {}
    for p in program.params:
        use = uses.get(p.name)
        integer = use is not None and use.integer
        low = p.min
        if use is not None and use.least is not None:
            low = use.least if low is None else max(low, use.least)
        default: float | int = int(p.default) if integer else p.default
        fields[p.name] = (
            int if integer else float,
            Field(default=default, ge=low, le=p.max, description=f"${p.name}"),
        )
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "ExpressionParams", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def definition(strategy: InlineStrategy) -> StrategyDef:
    """Return the engine's definition of an inline strategy (compiled once per text)."""
    return _definition_of(
        tuple(strategy.rules.given()), decls(strategy.params), strategy.label, strategy.version
    )


@functools.lru_cache(maxsize=1024)
def _definition_of(
    rules: tuple[tuple[str, str], ...],
    params: tuple[ParamDecl, ...],
    label: str,
    version: int | None,
) -> StrategyDef:
    """Return the definition of rules as written (the program is cached by normal text)."""
    return _definition(compile_program(rules, params), label, version)


@functools.lru_cache(maxsize=256)
def _definition(program: Program, label: str, version: int | None) -> StrategyDef:
    def build(bars: Bars, p: BaseModel) -> np.ndarray:
        values = p.model_dump()
        with np.errstate(all="ignore"):
            return np.column_stack(
                [
                    program.decide(Evaluation(symbol_series(bars, j)), values)
                    for j in range(bars.n_symbols)
                ]
            )

    def build_many(
        bars: Bars, fixed: dict[str, Any], combos: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        ev = Evaluation(symbol_series(bars, 0))
        k = len(combos)
        rules = np.empty((k, 4, bars.n_bars), dtype=np.bool_)
        ready = np.empty(k, dtype=np.int64)
        values = dict(fixed)
        if hasattr(combos, "column"):  # grid.Combos' columns: no dict per combination
            columns = [(n, combos.column(n)) for n in combos.names]  # type: ignore[attr-defined]
            rows: Any = range(len(combos))
        else:
            columns = []
            rows = combos
        with np.errstate(all="ignore"):
            for i, row in enumerate(rows):
                if columns:
                    for name, column in columns:
                        values[name] = column[row]
                else:
                    values = {**fixed, **row}
                four, ready[i] = program.rules_of(ev, values)
                for j in range(4):
                    rules[i, j] = four[j]
        out = np.empty((k, bars.n_bars))
        rules_targets_nb(rules, ready, out)
        return out

    return StrategyDef(
        name=label,
        description="A strategy written in the language.",
        params=_params_model(program),  # type: ignore[arg-type]
        build=build,
        above=program.pairs,
        short=program.short,
        rules=program.normal,
        build_many=build_many,
        sweep_many=ProgramSweep(program),
        version=version,
    )
