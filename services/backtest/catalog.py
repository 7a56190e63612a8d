"""The one strategy registry a request reads: the built-ins (``strategies.STRATEGIES``) and
the saved strategies written in the language (the ``strategies`` table), each saved version
immutable. Validates rules, saves, lists, retires, and resolves a request's strategy to what
the engine runs (a saved name becomes the exact rules and version it trades)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from services.backtest import repository as repo
from services.backtest.config import BUILTIN_MODELS, BacktestConfig
from services.backtest.expressions import (
    InlineStrategy,
    ParamSpec,
    Rules,
    SavedStrategy,
    compile_inline,
    definition,
)
from services.backtest.language.functions import FUNCTIONS
from services.backtest.language.program import LanguageError
from services.backtest.language.syntax import COMPACT_GRAMMAR, GRAMMAR, SERIES, closest
from services.backtest.schemas import StrategyInfo, StrategyList
from services.backtest.strategies import STRATEGIES, StrategyDef
from services.backtest.strategy_schemas import (
    LanguageFunction,
    LanguageInfo,
    ParamFound,
    RetiredStrategy,
    SaveStrategyRequest,
    StrategyCheck,
)
from shared.db import Database
from shared.errors import AppError, NotFoundError, ValidationProblemError

C = TypeVar("C", bound=BacktestConfig)

ML_NOTE = (
    "Trades the calls of a model version trained by the predictor service "
    "(POST /predictor/train); POST /walk_forward trains one per window on "
    "in-sample bars only (`training`, `retrain_every`). Daily bars only; no "
    "param_grid."
)
EXAMPLES: list[dict[str, object]] = [
    {
        "what": "RSI dip-buying in an uptrend",
        "rules": {
            "entry_long": "rsi(close, $n) < 30 and close > sma(close, 200)",
            "exit_long": "rsi(close, $n) > 70",
        },
        "params": {"n": {"default": 14, "min": 2, "max": 50}},
    },
    {
        "what": "SMA crossover, long and short",
        "rules": {
            "entry_long": "crosses_above(sma(close, $fast), sma(close, $slow))",
            "exit_long": "crosses_below(sma(close, $fast), sma(close, $slow))",
            "entry_short": "crosses_below(sma(close, $fast), sma(close, $slow))",
            "exit_short": "crosses_above(sma(close, $fast), sma(close, $slow))",
        },
        "params": {
            "fast": {"default": 10, "min": 2, "max": 100},
            "slow": {"default": 30, "min": 5, "max": 300},
        },
    },
]
SEMANTICS = [
    "Rules are conditions decided at each bar's close from that bar and earlier ones only; "
    "orders fill per the run's `fill` (next open by default).",
    "entry_long goes long when not long (closing a short first); exit_long closes a long; "
    "entry_short and exit_short mirror them. An entry that holds while already in position "
    "re-enters after a stop-loss exit. No entry_short: long only.",
    "No rule is true before every indicator it reads has a value (the warm-up).",
    "Comparisons with an undefined value are false. Windows and lag take whole bars; lag "
    "needs n >= 0: nothing can read a later bar.",
    "Parameters are `$name`, each declared in `params` with a default and optional min/max; "
    "POST /optimize can sweep any of them by name in `param_grid`.",
]
RULE_DOCS = {
    "entry_long": "go long (closing a short first)",
    "exit_long": "close a long",
    "entry_short": "go short (closing a long first)",
    "exit_short": "close a short",
}


class StrategyNotFoundError(NotFoundError):
    """No strategy has this name (or version)."""

    code = "strategy_not_found"


class StrategyExistsError(AppError):
    """The name belongs to a built-in strategy."""

    status = 409
    code = "strategy_name_taken"
    title = "Name taken"


def language_problem(e: LanguageError, prefix: str) -> ValidationProblemError:
    """Return the 422 of a rule that does not compile, naming its field."""
    where = e.rule or "rules"
    field = f"{prefix}{where}" if where.startswith("params") else f"{prefix}rules.{where}"
    if where == "rules":
        field = f"{prefix}rules"
    return ValidationProblemError(str(e), field=field)


def check_program(rules: Rules, params: dict[str, ParamSpec], prefix: str = "") -> StrategyCheck:
    """Return what rules compile to (422 naming the rule, line:column otherwise)."""
    try:
        program = compile_inline(InlineStrategy(rules=rules, params=params))
    except LanguageError as e:
        raise language_problem(e, prefix) from None
    uses = dict(program.uses)
    return StrategyCheck(
        rules=program.normal,
        params=[
            ParamFound(
                name=p.name,
                default=p.default,
                min=p.min,
                max=p.max,
                integer=bool(uses.get(p.name) and uses[p.name].integer),
            )
            for p in program.params
        ],
        warmup_bars=program.warmup(),
        short=program.short,
    )


def language() -> LanguageInfo:
    """Return the language's grammar, functions, semantics and examples."""
    return LanguageInfo(
        grammar=GRAMMAR.strip(),
        series=list(SERIES),
        functions=[
            LanguageFunction(
                name=f.name, signature=f.signature, description=f.doc, returns=f.returns
            )
            for f in FUNCTIONS.values()
        ],
        rules=RULE_DOCS,
        semantics=SEMANTICS,
        examples=EXAMPLES,
    )


def _example(example: dict[str, Any]) -> str:
    """Return an example as one line: rules sharing a text together, then the params."""
    texts: dict[str, list[str]] = {}
    for rule, text in dict(example["rules"]).items():  # type: ignore[call-overload]
        texts.setdefault(text, []).append(rule)
    rules = "; ".join(f"{'/'.join(names)}: {text}" for text, names in texts.items())
    params = ", ".join(
        f"${n} {p['default']} ({p['min']}..{p['max']})"
        for n, p in dict(example["params"]).items()  # type: ignore[call-overload]
    )
    return f"{rules}; params {params}"


def language_guide(lead: str) -> str:
    """Return ``lead`` and what a model needs to write rules: the compact grammar, every
    function grouped by signature, and the first two ``EXAMPLES`` (a tool's description)."""
    groups: dict[str, list[str]] = {}
    for f in FUNCTIONS.values():
        groups.setdefault(", ".join(a for a, _ in f.args), []).append(f.name)
    functions = "; ".join(f"{'|'.join(names)}({args})" for args, names in groups.items())
    examples = "\n".join(f"Example: {_example(e)}" for e in EXAMPLES[:2])
    return (
        f"{lead}\nA rule is a condition at a bar's close; declare each `$name` in `params` "
        "as {default, min, max}.\n"
        f"Grammar: {COMPACT_GRAMMAR}.\nFunctions (lag n >= 0): {functions}.\n{examples}"
    )


def _searchable(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if f.annotation in (int, float)]


def builtin_info(d: StrategyDef, *, available: bool) -> StrategyInfo:
    """Return a built-in's entry in GET /strategies."""
    note = None
    searchable = _searchable(d.params)
    if d.needs_signals:
        note = ML_NOTE
        if not available:
            note += (
                " No predictor is configured here (PREDICTOR_URL), so a request "
                "naming it is a 422 `strategy_unavailable`."
            )
        searchable = []
    return StrategyInfo(
        name=d.name,
        description=d.description.strip(),
        available=available,
        note=note,
        parameters=d.params.model_json_schema(),
        defaults=d.params().model_dump(),
        searchable=searchable,
    )


def _inline_of(row: Any) -> InlineStrategy:
    return InlineStrategy(
        rules=Rules.model_validate(row.rules),
        params={k: ParamSpec.model_validate(v) for k, v in row.params.items()},
        name=row.name,
        version=int(row.version),
    )


def saved_info(row: Any) -> StrategyInfo:
    """Return a saved version's entry in GET /strategies."""
    d = definition(_inline_of(row))
    return StrategyInfo(
        name=row.name,
        description=row.description or "",
        kind="saved",
        available=True,
        parameters=d.params.model_json_schema(),
        defaults=d.params().model_dump(),
        searchable=_searchable(d.params),
        version=int(row.version),
        rules=d.rules,
        created_at=repo.aware(row.created_at),
    )


class StrategyCatalog:
    """Built-in and saved strategies, one list."""

    def __init__(self, db: Database, predictor_configured: Callable[[], bool]) -> None:
        self.db = db
        self.predictor_configured = predictor_configured

    def _builtins(self) -> list[StrategyInfo]:
        return [
            builtin_info(d, available=not d.needs_signals or self.predictor_configured())
            for d in STRATEGIES.values()
        ]

    async def list(self) -> StrategyList:
        """Return every built-in and every saved strategy's latest version."""
        async with self.db.session() as session:
            rows = await repo.list_strategies(session)
        return StrategyList(strategies=[*self._builtins(), *(saved_info(r) for r in rows)])

    async def get(self, name: str, version: int | None = None) -> StrategyInfo:
        """Return one strategy (a saved one's latest version unless given)."""
        if name in STRATEGIES:
            return next(s for s in self._builtins() if s.name == name)
        async with self.db.session() as session:
            row = await repo.load_strategy(session, name=name, version=version)
        if row is None:
            raise await self._not_found(name, version, "name")
        return saved_info(row)

    async def _not_found(
        self, name: str, version: int | None, field: str, *, in_request: bool = False
    ) -> AppError:
        async with self.db.session() as session:
            names = await repo.strategy_names(session)
        error = ValidationProblemError if in_request else StrategyNotFoundError
        if version is not None and name in names:
            return error(f"strategy `{name}` has no version {version}", field=field)
        near = closest(name, [*STRATEGIES, *names])
        hint = f"; did you mean `{near}`?" if near else ""
        return error(f"unknown strategy `{name}`{hint} (GET /strategies lists them)", field=field)

    async def save(self, request: SaveStrategyRequest) -> StrategyInfo:
        """Save the next version of a strategy (422 if its rules do not compile)."""
        if request.name in STRATEGIES:
            raise StrategyExistsError(
                f"`{request.name}` is a built-in strategy; choose another name", field="name"
            )
        check = check_program(request.rules, request.params)
        params = {k: v.model_dump() for k, v in request.params.items()}
        for attempt in range(3):
            try:
                async with self.db.session() as session:
                    row = await repo.save_strategy(
                        session,
                        name=request.name,
                        description=request.description,
                        rules=check.rules,
                        params=params,
                    )
                    await session.commit()
                return saved_info(row)
            except IntegrityError:  # a concurrent save took the version: take the next
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def retire(self, name: str) -> RetiredStrategy:
        """Retire every version of a saved strategy."""
        if name in STRATEGIES:
            raise StrategyExistsError(f"`{name}` is a built-in strategy", field="name")
        async with self.db.session() as session:
            count = await repo.retire_strategy(session, name=name)
            await session.commit()
        if count == 0:
            raise await self._not_found(name, None, "name")
        return RetiredStrategy(name=name, retired_versions=count)

    async def resolve(self, config: C, prefix: str = "strategy.") -> C:
        """Return the config with a saved strategy replaced by its rules and version, and
        any language strategy checked (422s name `strategy.rules.<rule>` or the param)."""
        strategy = config.strategy
        if isinstance(strategy, SavedStrategy):
            async with self.db.session() as session:
                row = await repo.load_strategy(
                    session, name=strategy.name, version=strategy.version
                )
            if row is None:
                field = f"{prefix}version" if strategy.version else f"{prefix}name"
                raise await self._not_found(strategy.name, strategy.version, field, in_request=True)
            inline = _inline_of(row)
            for key, value in strategy.params.items():
                if key not in inline.params:
                    known = ", ".join(f"${k}" for k in inline.params) or "none"
                    raise ValidationProblemError(
                        f"`${key}` is not a parameter of {strategy.name} (parameters: {known})",
                        field=f"{prefix}params.{key}",
                    )
                spec = inline.params[key]
                inline.params[key] = spec.model_copy(update={"default": value})
            strategy = inline
        if isinstance(strategy, InlineStrategy):
            try:
                d = definition(strategy)
            except LanguageError as e:
                raise language_problem(e, prefix) from None
            try:
                d.parse({k: v.default for k, v in strategy.params.items()})
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise ValidationProblemError(
                    f"`${where}`: {err['msg']}", field=f"{prefix}params.{where}"
                ) from None
            return config.model_copy(update={"strategy": strategy})
        return config


def needs_signals(strategy: Any) -> bool:
    """Return whether a request's strategy trades the predictor's calls."""
    name = getattr(strategy, "name", None)
    return (
        isinstance(strategy, tuple(BUILTIN_MODELS.values()))
        and isinstance(name, str)
        and STRATEGIES[name].needs_signals
    )
