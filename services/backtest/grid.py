"""The combinations a parameter search tries: a grid or random draw, constraints, checks.

`plan_search` turns a request's `param_grid` and `constraints` into the combinations to
try (422s name the field), checked against the strategy's own parameter rules on whole
columns at once (`StrategyDef.valid`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from pydantic import BaseModel, ValidationError

from services.backtest.schemas import Range, SearchSettings
from services.backtest.strategies import StrategyDef, get_strategy
from shared.errors import ValidationProblemError

MAX_VALUES_PER_PARAM = 100_000
MAX_GRID = 2_000_000
_CONSTRAINT = re.compile(
    r"^\s*([A-Za-z_]\w*|-?\d+(?:\.\d+)?)\s*(<=|>=|==|!=|<|>)\s*([A-Za-z_]\w*|-?\d+(?:\.\d+)?)\s*$"
)
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
Params = dict[str, float | int | bool]


class Combos(Sequence[Params]):
    """Parameter combinations held as columns: a dict per combination only when read.

    A search of a million combinations needs its columns (the sweep kernels read them
    whole) and a handful of dicts (the winners shown); building every dict up front cost a
    microsecond or two each.
    """

    __slots__ = ("_columns", "_size")

    def __init__(self, columns: Mapping[str, Sequence[float | int]], size: int) -> None:
        self._columns = dict(columns)
        self._size = size

    @classmethod
    def of(cls, rows: Sequence[Params]) -> Combos:
        """Return the combinations of explicit dicts (every one with the same keys)."""
        names = list(rows[0]) if rows else []
        return cls({n: [r[n] for r in rows] for n in names}, len(rows))

    @property
    def names(self) -> list[str]:
        """Return the searched parameters' names."""
        return list(self._columns)

    def column(self, name: str) -> Sequence[float | int]:
        """Return one parameter's value in every combination."""
        return self._columns[name]

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, i: int) -> Params: ...

    @overload
    def __getitem__(self, i: slice) -> Combos: ...

    def __getitem__(self, i: int | slice) -> Params | Combos:
        if isinstance(i, slice):
            return Combos({n: v[i] for n, v in self._columns.items()}, len(range(self._size)[i]))
        if not -self._size <= i < self._size:
            raise IndexError(i)
        return {n: v[i] for n, v in self._columns.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking: compare, do not hash

    def __repr__(self) -> str:
        return f"Combos({self._size} x {self.names})"


@dataclass(frozen=True)
class SearchPlan:
    """The combinations to try, and what was left out."""

    strategy: str
    fixed: dict[str, Any]  # the strategy.params every trial starts from
    combos: Combos  # only the searched parameters
    n_combinations: int  # meeting the constraints
    n_invalid: int  # rejected by the strategy's own checks
    definition: StrategyDef | None = None  # what the trials run (None: the registry's)


def _numeric_fields(params: type[BaseModel]) -> dict[str, bool]:
    """Return searchable parameter name -> is integer."""
    out: dict[str, bool] = {}
    for name, info in params.model_fields.items():
        if info.annotation is int:
            out[name] = True
        elif info.annotation is float:
            out[name] = False
    return out


def _values(name: str, spec: list[float] | Range, is_int: bool) -> np.ndarray:
    """Return the values one parameter takes (ValidationProblemError naming it)."""
    field = f"param_grid.{name}"
    if isinstance(spec, Range):
        count = math.floor((spec.stop - spec.start) / spec.step + 1e-9) + 1
        if count < 1:
            raise ValidationProblemError(
                f"{name}: stop ({spec.stop:g}) is below start ({spec.start:g})", field=field
            )
        if count > MAX_VALUES_PER_PARAM:
            raise ValidationProblemError(
                f"{name}: {count:,} values; at most {MAX_VALUES_PER_PARAM:,}", field=field
            )
        values = np.round(spec.start + spec.step * np.arange(count), 10)
    else:
        if not spec:
            raise ValidationProblemError(f"{name}: give at least one value", field=field)
        if len(spec) > MAX_VALUES_PER_PARAM:
            raise ValidationProblemError(
                f"{name}: {len(spec):,} values; at most {MAX_VALUES_PER_PARAM:,}", field=field
            )
        values = np.unique(np.asarray(spec, dtype=np.float64))
    if not np.isfinite(values).all():
        raise ValidationProblemError(f"{name}: values must be finite", field=field)
    if is_int:
        if np.abs(values - np.round(values)).max() > 1e-9:
            raise ValidationProblemError(f"{name} takes integers only", field=field)
        values = np.round(values)
    return np.asarray(values, dtype=np.float64)


def _operand(token: str, grid: Mapping[str, np.ndarray], fixed: Mapping[str, Any]) -> Any:
    if token in grid:
        return grid[token]
    if token in fixed:
        return fixed[token]
    return float(token)


def _parse_constraints(
    constraints: Sequence[str], names: Iterable[str]
) -> list[tuple[str, str, str]]:
    """Return each constraint as (left, op, right), checking that names are parameters."""
    known = set(names)
    parsed = []
    for i, text in enumerate(constraints):
        m = _CONSTRAINT.match(text)
        if m is None:
            raise ValidationProblemError(
                f"constraint {text!r}: expected `<param> <op> <param or number>` with op one "
                "of < <= > >= == !=, e.g. `fast < slow`",
                field=f"constraints[{i}]",
            )
        left, op, right = m.groups()
        for token in (left, right):
            if (token[0].isalpha() or token[0] == "_") and token not in known:
                raise ValidationProblemError(
                    f"constraint {text!r}: {token!r} is not a parameter of the strategy "
                    f"({', '.join(sorted(known))})",
                    field=f"constraints[{i}]",
                )
        parsed.append((left, op, right))
    return parsed


def plan_search(
    request: SearchSettings,
    strategy_name: str | StrategyDef,
    fixed_params: BaseModel,
    *,
    method: str = "grid",
    n_trials: int | None = None,
    seed: int = 0,
    require_grid: bool = True,
) -> SearchPlan:
    """Return the combinations a search tries (422 naming the field when it cannot)."""
    strategy = get_strategy(strategy_name)
    strategy_name = strategy.name
    fixed = fixed_params.model_dump()
    searchable = _numeric_fields(strategy.params)
    if require_grid and not request.param_grid:
        raise ValidationProblemError(
            f"param_grid: name at least one parameter of {strategy_name} to search "
            f"({', '.join(searchable) or 'it has none'})",
            field="param_grid",
        )
    grid: dict[str, np.ndarray] = {}
    for name, spec in request.param_grid.items():
        if name not in searchable:
            why = "is not a numeric parameter" if name in fixed else "is not a parameter"
            raise ValidationProblemError(
                f"{name} {why} of {strategy_name}; searchable: {', '.join(searchable) or 'none'}",
                field=f"param_grid.{name}",
            )
        grid[name] = _values(name, spec, searchable[name])
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_GRID:
        raise ValidationProblemError(
            f"param_grid has {size:,} combinations; at most {MAX_GRID:,}. Coarsen the steps.",
            field="param_grid",
        )
    constraints = _parse_constraints(request.constraints, fixed)
    names = list(grid)
    if names:
        mesh = np.meshgrid(*grid.values(), indexing="ij")
        columns = {n: m.reshape(-1) for n, m in zip(names, mesh, strict=True)}
    else:
        columns = {}
    keep = np.ones(size, dtype=bool)
    for left, op, right in constraints:
        ok = _OPS[op](_operand(left, columns, fixed), _operand(right, columns, fixed))
        keep &= np.broadcast_to(np.asarray(ok, dtype=bool), keep.shape)
    rows = np.flatnonzero(keep)
    n_combinations = int(rows.size)
    if n_combinations == 0:
        raise ValidationProblemError(
            "No combination of param_grid meets the constraints.", field="constraints"
        )
    if method == "random" and n_trials is not None and n_trials < rows.size:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=n_trials, replace=False))
    picked = {n: columns[n][rows] for n in names}
    ok = strategy.valid(picked, fixed)
    if ok is None:  # a constraint the vector check does not know: ask the model, row by row
        every = _combos(picked, searchable, rows.size)
        ok = np.array([_parses(strategy, {**fixed, **c}) for c in every], dtype=bool)
    combos = _combos({n: v[ok] for n, v in picked.items()}, searchable, int(ok.sum()))
    invalid = int(rows.size) - len(combos)
    if not combos:
        raise ValidationProblemError(
            f"Every combination of param_grid fails {strategy_name}'s own parameter checks "
            "(e.g. slow > fast); add a constraint or change the values.",
            field="param_grid",
        )
    return SearchPlan(strategy_name, fixed, combos, n_combinations, invalid, strategy)


def _combos(columns: dict[str, np.ndarray], searchable: dict[str, bool], size: int) -> Combos:
    """Return the rows of the columns as combinations (ints where the model wants ints)."""
    return Combos(
        {n: (v.astype(np.int64) if searchable[n] else v).tolist() for n, v in columns.items()},
        size if columns else min(size, 1),  # nothing searched: the fixed parameters, once
    )


def _parses(strategy: StrategyDef, params: dict[str, Any]) -> bool:
    """Return whether the strategy's parameter model accepts ``params``."""
    try:
        strategy.parse(params)
    except ValidationError:
        return False
    return True
