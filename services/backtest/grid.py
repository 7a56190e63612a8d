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
        steps = (spec.stop - spec.start) / spec.step  # inf for a span past float's range
        if not math.isfinite(steps) or steps > MAX_VALUES_PER_PARAM:
            raise ValidationProblemError(
                f"{name}: the range from {spec.start:g} to {spec.stop:g} by {spec.step:g} "
                f"holds more than {MAX_VALUES_PER_PARAM:,} values",
                field=field,
            )
        count = math.floor(steps + 1e-9) + 1
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


@dataclass(frozen=True)
class SearchCount:
    """How many combinations a search tries, counted without building its grid."""

    trials: int  # the count, or an upper bound of it
    exact: bool  # False: an upper bound (rules among three or more parameters, a random draw)


def _pairs(a: np.ndarray, op: str, b: np.ndarray) -> int:
    """Return how many (x in a, y in b) pairs meet ``x op y`` (sorted search, no grid)."""
    b = np.sort(b)
    left = np.searchsorted(b, a, side="left")
    right = np.searchsorted(b, a, side="right")
    n = b.size
    counts = {
        "<": n - right,
        "<=": n - left,
        ">": left,
        ">=": right,
        "==": right - left,
        "!=": n - (right - left),
    }[op]
    return int(np.sum(counts, dtype=np.int64))


PAIR_CHECK_MAX = 4_000_000  # two parameters' pairs checked one by one (chunked) at most


def _pairs_all(a: np.ndarray, b: np.ndarray, rules: list[tuple[str, str, str]], first: str) -> int:
    """Return how many pairs meet every rule (``first`` is a's name), in chunks of a."""
    total = 0
    step = max(1, PAIR_CHECK_MAX // 16 // max(1, b.size))
    for i in range(0, a.size, step):
        x = a[i : i + step, None]
        ok = np.ones((x.shape[0], b.size), dtype=bool)
        for left, op, _right in rules:
            ok &= _OPS[op](x, b[None, :]) if left == first else _OPS[op](b[None, :], x)
        total += int(ok.sum())
    return total


def count_search(
    request: SearchSettings,
    strategy_name: str | StrategyDef,
    fixed_params: BaseModel,
    *,
    method: str = "grid",
    n_trials: int | None = None,
) -> SearchCount:
    """Count the combinations a search would try, arithmetically: no grid is built.

    Each parameter's values are cut by the constraints against numbers or fixed parameters
    and by its own bounds; rules between two searched parameters (the constraints, the
    strategy's own such as slow > fast) are counted on sorted values. Exact when every rule
    links at most two parameters; otherwise an upper bound. 422s name the field as
    `plan_search`'s do.
    """
    strategy = get_strategy(strategy_name)
    fixed = fixed_params.model_dump()
    grid = _grid_values(request, strategy, fixed)
    exact = True
    rules = [
        *((*c, True) for c in _parse_constraints(request.constraints, fixed)),
        *((high, ">", low, False) for high, low in strategy.above),
    ]
    between: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for left, op, right, asked in rules:
        lg, rg = left in grid, right in grid
        if lg and rg and left != right:
            a, b = sorted((left, right))
            between.setdefault((a, b), []).append((left, op, right))
        elif lg or rg:
            name = left if lg else right
            v = grid[name]
            ok = _OPS[op](_operand(left, grid, fixed), _operand(right, grid, fixed))
            grid[name] = v[np.broadcast_to(np.asarray(ok, dtype=bool), v.shape)]
        elif asked and not bool(
            _OPS[op](_operand(left, grid, fixed), _operand(right, grid, fixed))
        ):
            return SearchCount(0, True)  # a constraint no combination meets
    for name, v in grid.items():
        ok = strategy.in_bounds(name, v)
        if ok is None:
            exact = False
        else:
            grid[name] = v[ok]
    # parameters linked by rules, as connected groups
    group = {n: {n} for n in grid}
    for a, b in between:
        merged = group[a] | group[b]
        for n in merged:
            group[n] = merged
    total = 1
    for members in {id(g): g for g in group.values()}.values():
        if len(members) == 1:
            total *= len(grid[next(iter(members))])
            continue
        pairs = {k: r for k, r in between.items() if k[0] in members}
        if len(members) == 2:
            (a, b), rs = next(iter(pairs.items()))
            if len(rs) == 1:
                left, op, _ = rs[0]
                x, y = (grid[a], grid[b]) if left == a else (grid[b], grid[a])
                total *= _pairs(x, op, y)
            elif grid[a].size * grid[b].size <= PAIR_CHECK_MAX:
                total *= _pairs_all(grid[a], grid[b], rs, a)
            else:
                exact = False
                total *= min(_pairs(*_oriented(grid, r)) for r in rs)
            continue
        exact = False  # three or more linked parameters: the best single-rule bound
        sizes = {n: len(grid[n]) for n in members}
        bound = math.prod(sizes.values())
        for (a, b), rs in pairs.items():
            rest = bound // max(1, sizes[a] * sizes[b])
            bound = min(bound, rest * min(_pairs(*_oriented(grid, r)) for r in rs))
        total *= bound
    if method == "random" and n_trials is not None and n_trials < total:
        return SearchCount(n_trials, False)
    return SearchCount(total, exact)


def _oriented(
    grid: Mapping[str, np.ndarray], rule: tuple[str, str, str]
) -> tuple[np.ndarray, str, np.ndarray]:
    left, op, right = rule
    return grid[left], op, grid[right]


def _grid_values(
    request: SearchSettings, strategy_name: str | StrategyDef, fixed: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Return each searched parameter's values (422 naming the field), grid not built."""
    strategy = get_strategy(strategy_name)
    searchable = _numeric_fields(strategy.params)
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
    return grid


def _mesh(grid: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return every combination of the values as columns (the grid, allocated)."""
    if not grid:
        return {}
    mesh = np.meshgrid(*grid.values(), indexing="ij")
    return {n: m.reshape(-1) for n, m in zip(grid, mesh, strict=True)}


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
    grid = _grid_values(request, strategy, fixed)
    size = math.prod(len(v) for v in grid.values())
    constraints = _parse_constraints(request.constraints, fixed)
    names = list(grid)
    columns = _mesh(grid)
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
